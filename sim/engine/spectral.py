"""Isotropic matrix functions of the deformation gradient with stable custom adjoints.

MPM needs two functions of ``F = U diag(sigma) V^T`` (SVD):

* the polar rotation ``R = U V^T`` (fixed-corotated stress), and
* singular-value clamping ``U diag(clamp(sigma, lo, hi)) V^T`` (snow-like plasticity,
  Stomakhin et al. 2013, "A material point method for snow simulation", Sec. 5).

Both are ``f(F) = U diag(g(sigma)) V^T``. Differentiating through the SVD directly divides
by ``sigma_i^2 - sigma_j^2``, which is infinite at ``F = I`` (every MPM particle at rest).
Instead the adjoint uses the divided-difference form of the derivative of an isotropic
matrix function: with ``Gh = U^T G V`` (``G`` the incoming adjoint),

    M_ii = g'(sigma_i) Gh_ii
    M_ij = a_ij (Gh_ij + Gh_ji)/2 + b_ij (Gh_ij - Gh_ji)/2,   i != j
    a_ij = (g_i - g_j) / (sigma_i - sigma_j)    (-> (g'_i + g'_j)/2 when sigma_i ~ sigma_j)
    b_ij = (g_i + g_j) / (sigma_i + sigma_j)
    adj_F = U M V^T

which is finite for repeated singular values and exact elsewhere.
"""
import warp as wp

_EPS = 1e-6


def build_spectral(dim: int, T, vec, mat, module: str):
    """Return ``(polar_rotation, clamp_singular_values)`` Warp functions for ``dim`` x ``dim``
    matrices of scalar type ``T``; both carry the custom adjoint described in the module doc."""
    tag = f"{dim}d_{T.__name__}"
    eps = T(_EPS)

    def _pair_a(si: T, sj: T, gi: T, gj: T, dgi: T, dgj: T) -> T:
        diff = si - sj
        if wp.abs(diff) > eps:
            return (gi - gj) / diff
        return T(0.5) * (dgi + dgj)

    def _pair_b(si: T, sj: T, gi: T, gj: T) -> T:
        tot = si + sj
        if wp.abs(tot) > eps:
            return (gi + gj) / tot
        return T(0.0)

    pair_a = wp.func(_pair_a, name=f"spectral_pair_a_{tag}", module=module)
    pair_b = wp.func(_pair_b, name=f"spectral_pair_b_{tag}", module=module)

    if dim == 2:
        def _rotation(angle: T) -> mat:
            c = wp.cos(angle)
            s = wp.sin(angle)
            return mat(c, -s, s, c)

        rotation = wp.func(_rotation, name=f"spectral_rotation_{tag}", module=module)

        def _svd(F: mat):
            # closed form (Blinn 1996, "Consider the lowly 2x2 matrix"): F = rot(phi) diag(s0, s1)
            # rot(theta)^T with U, V rotations and s1 < 0 iff det F < 0, as svd3 returns them.
            # wp.svd2 returns U = V = I whenever F^T F = c I (any scaled rotation, e.g. a rigidly
            # rotating particle), and a reflection U for det F < 0.
            e = T(0.5) * (F[0, 0] + F[1, 1])
            f = T(0.5) * (F[0, 0] - F[1, 1])
            g = T(0.5) * (F[1, 0] + F[0, 1])
            h = T(0.5) * (F[1, 0] - F[0, 1])
            q = wp.sqrt(e * e + h * h)
            r = wp.sqrt(f * f + g * g)
            a1 = wp.atan2(g, f)
            a2 = wp.atan2(h, e)
            U = rotation(T(0.5) * (a2 + a1))
            V = rotation(T(0.5) * (a1 - a2))
            return U, vec(q + r, q - r), V

        def _adjoint_core(U: mat, s: vec, V: mat, G: mat, g: vec, dg: vec) -> mat:
            Gh = wp.transpose(U) @ G @ V
            a01 = pair_a(s[0], s[1], g[0], g[1], dg[0], dg[1])
            b01 = pair_b(s[0], s[1], g[0], g[1])
            sym01 = T(0.5) * (Gh[0, 1] + Gh[1, 0])
            anti01 = T(0.5) * (Gh[0, 1] - Gh[1, 0])
            M = mat(dg[0] * Gh[0, 0], a01 * sym01 + b01 * anti01,
                    a01 * sym01 - b01 * anti01, dg[1] * Gh[1, 1])
            return U @ M @ wp.transpose(V)
    else:
        def _svd(F: mat):
            return wp.svd3(F)

        def _adjoint_core(U: mat, s: vec, V: mat, G: mat, g: vec, dg: vec) -> mat:
            Gh = wp.transpose(U) @ G @ V
            a01 = pair_a(s[0], s[1], g[0], g[1], dg[0], dg[1])
            a02 = pair_a(s[0], s[2], g[0], g[2], dg[0], dg[2])
            a12 = pair_a(s[1], s[2], g[1], g[2], dg[1], dg[2])
            b01 = pair_b(s[0], s[1], g[0], g[1])
            b02 = pair_b(s[0], s[2], g[0], g[2])
            b12 = pair_b(s[1], s[2], g[1], g[2])
            y01 = T(0.5) * (Gh[0, 1] + Gh[1, 0])
            y02 = T(0.5) * (Gh[0, 2] + Gh[2, 0])
            y12 = T(0.5) * (Gh[1, 2] + Gh[2, 1])
            k01 = T(0.5) * (Gh[0, 1] - Gh[1, 0])
            k02 = T(0.5) * (Gh[0, 2] - Gh[2, 0])
            k12 = T(0.5) * (Gh[1, 2] - Gh[2, 1])
            M = mat(dg[0] * Gh[0, 0], a01 * y01 + b01 * k01, a02 * y02 + b02 * k02,
                    a01 * y01 - b01 * k01, dg[1] * Gh[1, 1], a12 * y12 + b12 * k12,
                    a02 * y02 - b02 * k02, a12 * y12 - b12 * k12, dg[2] * Gh[2, 2])
            return U @ M @ wp.transpose(V)

    def _inside(s: vec, lo: T, hi: T) -> vec:
        # g'(sigma) of the clamp: 1 inside [lo, hi], 0 outside
        out = vec(T(0.0))
        for k in range(dim):
            ind = wp.where((s[k] >= lo) and (s[k] <= hi), T(1.0), T(0.0))
            out = out + ind * basis(k)
        return out

    def _basis(k: int) -> vec:
        return wp.where(k == 0, e0, wp.where(k == 1, e1, e2))

    e0, e1, e2 = _basis_vectors(dim, T, vec)
    basis = wp.func(_basis, name=f"spectral_basis_{tag}", module=module)
    inside = wp.func(_inside, name=f"spectral_inside_{tag}", module=module)
    svd = wp.func(_svd, name=f"spectral_svd_{tag}", module=module)
    adjoint_core = wp.func(_adjoint_core, name=f"spectral_adjoint_{tag}", module=module)

    def _polar_rotation(F: mat) -> mat:
        U, s, V = svd(F)
        return U @ wp.transpose(V)

    def _adj_polar_rotation(F: mat, adj_ret: mat):
        U, s, V = svd(F)
        wp.adjoint[F] += adjoint_core(U, s, V, adj_ret, vec(T(1.0)), vec(T(0.0)))

    def _clamp_sv(F: mat, lo: T, hi: T) -> mat:
        U, s, V = svd(F)
        sc = wp.min(wp.max(s, vec(lo)), vec(hi))
        return U @ wp.diag(sc) @ wp.transpose(V)

    def _adj_clamp_sv(F: mat, lo: T, hi: T, adj_ret: mat):
        U, s, V = svd(F)
        sc = wp.min(wp.max(s, vec(lo)), vec(hi))
        wp.adjoint[F] += adjoint_core(U, s, V, adj_ret, sc, inside(s, lo, hi))

    polar_rotation = wp.func(_polar_rotation, name=f"polar_rotation_{tag}", module=module)
    wp.func_grad(polar_rotation)(_adj_polar_rotation)
    clamp_sv = wp.func(_clamp_sv, name=f"clamp_singular_values_{tag}", module=module)
    wp.func_grad(clamp_sv)(_adj_clamp_sv)
    return polar_rotation, clamp_sv


def _basis_vectors(dim: int, T, vec):
    """Unit vectors e0, e1, e2 of type ``vec`` (e2 is zero when ``dim == 2``)."""
    ones = [[T(1.0) if i == k else T(0.0) for i in range(dim)] for k in range(3)]
    return tuple(vec(*row) for row in ones)
