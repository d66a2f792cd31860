"""MLS-MPM substep kernels in Warp, generated for one (dimension, scalar type) pair.

One substep of the moving-least-squares MPM of Hu et al. 2018 ("A moving least squares
material point method with displacement discontinuity and two-way rigid body coupling",
Sec. 4; the 88-line form of the Taichi ``mpm88`` example) is

1. ``p2g_stress``: ``F' = (I + dt C) F`` (Eq. 17), plasticity/material projection, Kirchhoff
   stress ``tau`` and the affine term ``A_p = -dt V_p (4/dx^2) tau + m_p C_p`` (Eq. 29,
   quadratic B-spline); ``p2g_scatter``: ``m_i += w m_p``, ``(mv)_i += w (m_p v_p + A_p (x_i - x_p))``;
2. ``grid_update``: ``v_i = (mv)_i / m_i + dt g``, kinematic tools by FluidLab's soft contact
   and slip walls;
3. ``g2p``: ``v_p = sum w v_i``, ``C_p = (4/dx^2) sum w v_i (x_i - x_p)^T`` (APIC), ``x_p += dt v_p``;
4. optionally ``body_reduce`` + ``body_project``: per-body shape matching for rigid particles
   (Mueller et al. 2005, "Meshless deformations based on shape matching", Eq. 7).

Every kernel reads substep ``s`` buffers and writes fresh ``s+1`` buffers, so a segment can
be differentiated without in-place overwrites. ``p2g_scatter`` and ``g2p`` have hand-written
adjoint kernels (gathers exploiting the separable weights); the others use Warp's. All kernels of one variant live in
one Warp module, defined together before the first launch (no module rebuilds).
"""
from dataclasses import dataclass

import warp as wp

from .spectral import build_spectral

MAX_TOOLS = 8  # the tool loop is unrolled (differentiable); one grid kernel per tool count

# Material kinds (see sim.engine.materials.MaterialKind).
_LIQUID, _ELASTIC, _PLASTIC, _RIGID = 0, 1, 2, 3
# Tool shapes (see sim.engine.tools.ToolShape).
_SPHERE, _BOX, _CAPSULE = 0, 1, 2

_TYPES = {
    (2, "float32"): (wp.float32, wp.vec2f, wp.mat22f),
    (2, "float64"): (wp.float64, wp.vec2d, wp.mat22d),
    (3, "float32"): (wp.float32, wp.vec3f, wp.mat33f),
    (3, "float64"): (wp.float64, wp.vec3d, wp.mat33d),
}


@dataclass(frozen=True)
class MPMKernels:
    """Kernels and types of one (dim, dtype) variant."""
    dim: int
    scalar: type
    vec: type
    mat: type
    p2g_stress: wp.Kernel
    p2g_scatter: wp.Kernel
    p2g_scatter_adjoint: wp.Kernel
    g2p_adjoint: wp.Kernel
    make_grid_update: object  # n_tools -> wp.Kernel (see grid_update())
    g2p: wp.Kernel
    body_reduce: wp.Kernel
    body_project: wp.Kernel
    add_vec: wp.Kernel

    def grid_update(self, n_tools: int) -> wp.Kernel:
        """The grid-update kernel for ``n_tools`` tools (built once per count)."""
        if n_tools not in _GRID_CACHE.setdefault((self.dim, self.scalar), {}):
            _GRID_CACHE[(self.dim, self.scalar)][n_tools] = self.make_grid_update(n_tools)
        return _GRID_CACHE[(self.dim, self.scalar)][n_tools]


_CACHE: dict = {}
_GRID_CACHE: dict = {}


def get_kernels(dim: int, dtype: str) -> MPMKernels:
    """Kernels for ``dim`` in {2, 3} and ``dtype`` in {"float32", "float64"} (built once)."""
    key = (dim, dtype)
    if key not in _CACHE:
        _CACHE[key] = _build(dim, dtype)
    return _CACHE[key]


def _dim_helpers(dim, T, vec, mat, module, tag):
    """Small functions whose body depends on the dimension; everything else is generic."""
    wmat = wp.types.matrix(shape=(3, dim), dtype=T)
    v3 = wp.types.vector(length=3, dtype=T)

    def _row_unit(i: int) -> v3:
        return v3(wp.where(i == 0, T(1.0), T(0.0)), wp.where(i == 1, T(1.0), T(0.0)),
                  wp.where(i == 2, T(1.0), T(0.0)))

    if dim == 2:
        def _stencil_weight(W: wmat, i: int, j: int, k: int) -> T:
            return W[i, 0] * W[j, 1]

        def _weight_partials(W: wmat, i: int, j: int, k: int):
            # d(W[i,0] W[j,1]) / d(W[i,0], W[j,1], -)
            return W[j, 1], W[i, 0], T(0.0)

        def _make_vec(a: T, b: T, c: T) -> vec:
            return vec(a, b)

        def _third(v: vec) -> T:
            return T(0.0)

        def _base_third(xg: vec) -> int:
            return 0

        def _nz_stride(n: int) -> int:
            return 1

        def _make_diag(a: T, b: T, c: T) -> mat:
            return mat(a, T(0.0), T(0.0), b)

        def _max_comp(v: vec) -> T:
            return wp.max(v[0], v[1])

        def _box_inside_normal(d: vec, q: vec) -> vec:
            # unit normal of the nearest box face, for a point inside the box
            s0 = wp.where(q[0] >= T(0.0), T(1.0), T(-1.0))
            s1 = wp.where(q[1] >= T(0.0), T(1.0), T(-1.0))
            if d[0] > d[1]:
                return vec(s0, T(0.0))
            return vec(T(0.0), s1)
    else:
        def _stencil_weight(W: wmat, i: int, j: int, k: int) -> T:
            return W[i, 0] * W[j, 1] * W[k, 2]

        def _weight_partials(W: wmat, i: int, j: int, k: int):
            # d(W[i,0] W[j,1] W[k,2]) / d(W[i,0], W[j,1], W[k,2])
            return W[j, 1] * W[k, 2], W[i, 0] * W[k, 2], W[i, 0] * W[j, 1]

        def _make_vec(a: T, b: T, c: T) -> vec:
            return vec(a, b, c)

        def _third(v: vec) -> T:
            return v[2]

        def _base_third(xg: vec) -> int:
            return int(wp.floor(xg[2] - T(0.5)))

        def _nz_stride(n: int) -> int:
            return n

        def _make_diag(a: T, b: T, c: T) -> mat:
            return mat(a, T(0.0), T(0.0), T(0.0), b, T(0.0), T(0.0), T(0.0), c)

        def _max_comp(v: vec) -> T:
            return wp.max(v[0], wp.max(v[1], v[2]))

        def _box_inside_normal(d: vec, q: vec) -> vec:
            s0 = wp.where(q[0] >= T(0.0), T(1.0), T(-1.0))
            s1 = wp.where(q[1] >= T(0.0), T(1.0), T(-1.0))
            s2 = wp.where(q[2] >= T(0.0), T(1.0), T(-1.0))
            if d[0] >= d[1] and d[0] >= d[2]:
                return vec(s0, T(0.0), T(0.0))
            if d[1] >= d[2]:
                return vec(T(0.0), s1, T(0.0))
            return vec(T(0.0), T(0.0), s2)

    names = dict(stencil_weight=_stencil_weight, weight_partials=_weight_partials, row_unit=_row_unit,
                 make_vec=_make_vec, third=_third, base_third=_base_third, nz_stride=_nz_stride, make_diag=_make_diag, max_comp=_max_comp,
                 box_inside_normal=_box_inside_normal)
    return {k: wp.func(f, name=f"mpm_{k}_{tag}", module=module) for k, f in names.items()}


def _build(dim: int, dtype: str) -> MPMKernels:
    T, vec, mat = _TYPES[(dim, dtype)]
    tag = f"{dim}d_{dtype}"
    module = f"sim_mpm_{tag}"
    h = _dim_helpers(dim, T, vec, mat, module, tag)
    make_vec, third, make_diag = h["make_vec"], h["third"], h["make_diag"]
    stencil_weight, weight_partials, row_unit = h["stencil_weight"], h["weight_partials"], h["row_unit"]
    v3 = wp.types.vector(length=3, dtype=T)
    base_third, nz_stride = h["base_third"], h["nz_stride"]
    max_comp, box_inside_normal = h["max_comp"], h["box_inside_normal"]
    polar_rotation, clamp_singular_values = build_spectral(dim, T, vec, mat, module)
    NZ = 3 if dim == 3 else 1  # stencil extent along the third axis

    def fn(f):
        return wp.func(f, name=f"mpm_{f.__name__.strip('_')}_{tag}", module=module)

    def kernel(f):
        return wp.kernel(f, name=f"mpm_{f.__name__.strip('_')}_{tag}", module=module)

    @fn
    def _stencil(x: vec, inv_dx: T):
        """Base node (3 ints), fractional position fx (vec) and the quadratic B-spline weights
        as a (3, dim) matrix, row o = weight of node offset o per axis (Hu 2018, Eq. 3)."""
        xg = x * inv_dx
        b0 = int(wp.floor(xg[0] - T(0.5)))
        b1 = int(wp.floor(xg[1] - T(0.5)))
        b2 = base_third(xg)
        fx = xg - make_vec(T(float(b0)), T(float(b1)), T(float(b2)))
        a0 = vec(T(1.5)) - fx
        a1 = fx - vec(T(1.0))
        a2 = fx - vec(T(0.5))
        W = wp.matrix_from_rows(T(0.5) * wp.cw_mul(a0, a0), vec(T(0.75)) - wp.cw_mul(a1, a1),
                                T(0.5) * wp.cw_mul(a2, a2))
        return b0, b1, b2, fx, W

    @fn
    def _kirchhoff(kind: int, Fn: mat, C: mat, E: T, nu: T, visc: T):
        """Kirchhoff stress tau (dim x dim) and the stored F for material ``kind``.

        liquid:  tau = lam J (J-1) I + visc J (C + C^T),  F stored as diag(J, 1, 1)
        elastic: tau = 2 mu (F - R) F^T + lam J (J-1) I   (fixed corotated)
        rigid:   tau = 0, F = I (the body is rigidified by shape matching)
        plastic strain is applied by the caller before this function.
        """
        mu = E / (T(2.0) * (T(1.0) + nu))
        lam = E * nu / ((T(1.0) + nu) * (T(1.0) - T(2.0) * nu))
        ident = wp.identity(n=dim, dtype=T)
        J = wp.determinant(Fn)
        if kind == _RIGID:
            return mat(T(0.0)), ident
        if kind == _LIQUID:
            tau = lam * J * (J - T(1.0)) * ident + visc * J * (C + wp.transpose(C))
            return tau, make_diag(J, T(1.0), T(1.0))
        R = polar_rotation(Fn)
        tau = T(2.0) * mu * (Fn - R) @ wp.transpose(Fn) + lam * J * (J - T(1.0)) * ident
        return tau, Fn

    @kernel
    def _p2g_stress(C: wp.array(dtype=mat), F: wp.array(dtype=mat), birth: wp.array(dtype=int), s: int,
                    p_mass: wp.array(dtype=T), p_mat: wp.array(dtype=int), mat_kind: wp.array(dtype=int),
                    E: wp.array(dtype=T), nu: wp.array(dtype=T), visc: wp.array(dtype=T),
                    sv_lo: wp.array(dtype=T), sv_hi: wp.array(dtype=T), p_vol: T, dt: T, inv_dx: T,
                    F_out: wp.array(dtype=mat), affine_out: wp.array(dtype=mat)):
        """F update, plasticity and the APIC affine matrix A_p = -dt V_p (4/dx^2) tau + m_p C_p."""
        p = wp.tid()
        if birth[p] > s:  # parked in the injector pool
            F_out[p] = F[p]
            affine_out[p] = mat(T(0.0))
            return
        m = p_mat[p]
        kind = mat_kind[m]
        Fn = (wp.identity(n=dim, dtype=T) + dt * C[p]) @ F[p]
        if kind == _PLASTIC:
            Fn = clamp_singular_values(Fn, sv_lo[m], sv_hi[m])
        tau, F_store = _kirchhoff(kind, Fn, C[p], E[m], nu[m], visc[m])
        F_out[p] = F_store
        affine_out[p] = (-dt * p_vol * T(4.0) * inv_dx * inv_dx) * tau + p_mass[p] * C[p]

    @kernel
    def _p2g_scatter(x: wp.array(dtype=vec), v: wp.array(dtype=vec), affine: wp.array(dtype=mat),
                     birth: wp.array(dtype=int), s: int, p_mass: wp.array(dtype=T), inv_dx: T,
                     n_grid: int, grid_mv: wp.array(dtype=vec), grid_m: wp.array(dtype=T)):
        """m_i += w m_p, (mv)_i += w (m_p v_p + A_p (x_i - x_p)) over the 3^dim stencil."""
        p = wp.tid()
        if birth[p] > s:
            return
        mass = p_mass[p]
        b0, b1, b2, fx, W = _stencil(x[p], inv_dx)
        # momentum to node offset o: w (m v + A (o - fx) dx) = w (mom0 + A_dx o)
        affine_dx = affine[p] / inv_dx
        mom0 = mass * v[p] - affine_dx @ fx
        for i in range(3):
            for j in range(3):
                for k in range(NZ):
                    w = stencil_weight(W, i, j, k)
                    offset = make_vec(T(float(i)), T(float(j)), T(float(k)))
                    node = ((b0 + i) * n_grid + (b1 + j)) * nz_stride(n_grid) + (b2 + k)
                    wp.atomic_add(grid_mv, node, w * (mom0 + affine_dx @ offset))
                    wp.atomic_add(grid_m, node, w * mass)

    @fn
    def _dweights(f: T) -> v3:
        return v3(f - T(1.5), T(-2.0) * (f - T(1.0)), f - T(0.5))

    @kernel
    def _p2g_scatter_adjoint(x: wp.array(dtype=vec), v: wp.array(dtype=vec), affine: wp.array(dtype=mat),
                             birth: wp.array(dtype=int), s: int, p_mass: wp.array(dtype=T), inv_dx: T,
                             n_grid: int, adj_grid_mv: wp.array(dtype=vec), adj_grid_m: wp.array(dtype=T),
                             adj_x: wp.array(dtype=vec), adj_v: wp.array(dtype=vec),
                             adj_affine: wp.array(dtype=mat)):
        """Hand-written adjoint of ``p2g_scatter`` (a gather of the grid adjoints; Warp's
        generated adjoint of the unrolled scatter costs 3-4.5x the forward)."""
        p = wp.tid()
        if birth[p] > s:
            return
        mass = p_mass[p]
        b0, b1, b2, fx, W = _stencil(x[p], inv_dx)
        A = affine[p] / inv_dx
        mom0 = mass * v[p] - A @ fx
        adj_mom0 = vec(T(0.0))
        adj_A = mat(T(0.0))
        # r_d[o] = adjoint of the weight W[o, d] of node offset o along axis d
        r0 = v3(T(0.0))
        r1 = v3(T(0.0))
        r2 = v3(T(0.0))
        for i in range(3):
            for j in range(3):
                for k in range(NZ):
                    w = stencil_weight(W, i, j, k)
                    offset = make_vec(T(float(i)), T(float(j)), T(float(k)))
                    node = ((b0 + i) * n_grid + (b1 + j)) * nz_stride(n_grid) + (b2 + k)
                    g = adj_grid_mv[node]
                    adj_w = wp.dot(g, mom0 + A @ offset) + adj_grid_m[node] * mass
                    adj_mom0 = adj_mom0 + w * g
                    adj_A = adj_A + wp.outer(w * g, offset)
                    d0, d1, d2 = weight_partials(W, i, j, k)
                    r0 = r0 + (adj_w * d0) * row_unit(i)
                    r1 = r1 + (adj_w * d1) * row_unit(j)
                    r2 = r2 + (adj_w * d2) * row_unit(k)
        adj_A = adj_A - wp.outer(adj_mom0, fx)
        # d W[o, d] / d fx_d for o = 0, 1, 2: (fx - 1.5, -2 (fx - 1), fx - 0.5)
        adj_fx = make_vec(wp.dot(r0, _dweights(fx[0])), wp.dot(r1, _dweights(fx[1])),
                          wp.dot(r2, _dweights(third(fx)))) - wp.transpose(A) @ adj_mom0
        adj_x[p] = adj_x[p] + inv_dx * adj_fx
        adj_v[p] = adj_v[p] + mass * adj_mom0
        adj_affine[p] = adj_affine[p] + adj_A / inv_dx

    @fn
    def _tool_sdf(shape: int, size: vec, q: vec) -> T:
        if shape == _SPHERE:
            return wp.length(q) - size[0]
        if shape == _BOX:
            d = wp.abs(q) - size
            return wp.length(wp.max(d, vec(T(0.0)))) + wp.min(max_comp(d), T(0.0))
        qa = q - make_vec(wp.clamp(q[0], -size[1], size[1]), T(0.0), T(0.0))
        return wp.length(qa) - size[0]

    @fn
    def _tool_normal(shape: int, size: vec, q: vec) -> vec:
        """Outward unit normal (gradient of the SDF) in the tool frame."""
        eps = T(1e-12)
        if shape == _SPHERE:
            return q / wp.max(wp.length(q), eps)
        if shape == _BOX:
            d = wp.abs(q) - size
            dp = wp.max(d, vec(T(0.0)))
            lp = wp.length(dp)
            if lp > eps:
                return wp.cw_mul(dp / lp, wp.cw_div(q, wp.max(wp.abs(q), vec(eps))))
            return box_inside_normal(d, q)
        qa = q - make_vec(wp.clamp(q[0], -size[1], size[1]), T(0.0), T(0.0))
        return qa / wp.max(wp.length(qa), eps)

    @fn
    def _soft_contact(v: vec, m: T, xw: vec, dt: T, shape: int, size: vec, softness: T, friction: T,
                      p0: vec, R0: mat, p1: vec, R1: mat) -> vec:
        """FluidLab soft contact of grid velocity ``v`` at node ``xw`` with one kinematic tool.

        influence = min(exp(-sdf * softness), 1); active where sdf <= 0 or influence > 0.1;
        v <- v_tool + v_rel,t * influence + v_rel * (1 - influence) with Coulomb friction on
        the tangential part. The tool moves from pose (p0, R0) to (p1, R1) over this substep.
        """
        q = wp.transpose(R0) @ (xw - p0)
        d = _tool_sdf(shape, size, q)
        influence = wp.min(wp.exp(-d * softness), T(1.0))
        if m > T(0.0) and (d <= T(0.0) or (softness > T(0.0) and influence > T(0.1))):
            v_tool = (p1 + R1 @ q - xw) / dt
            n = R0 @ _tool_normal(shape, size, q)
            rel = v - v_tool
            vn = wp.dot(rel, n)
            rel_t = rel - wp.min(vn, T(0.0)) * n
            tn = wp.length(rel_t)
            if vn < T(0.0) and tn > T(1e-12) and friction > T(0.0):
                rel_t = rel_t * (wp.max(T(0.0), tn + vn * friction) / tn)
            return v_tool + rel_t * influence + rel * (T(1.0) - influence)
        return v

    def make_grid_update(n_tools: int) -> wp.Kernel:
        """grid_update with the tool loop unrolled ``n_tools`` times, in its own small Warp
        module (compiled on first use): the adjoint of unused contact code is not free."""

        def _grid_update(grid_mv: wp.array(dtype=vec), grid_m: wp.array(dtype=T), s: int,
                         dt: T, dx: T, gravity: vec, n_grid: int, bound: int,
                         tool_shape: wp.array(dtype=int), tool_size: wp.array(dtype=vec),
                         tool_softness: wp.array(dtype=T), tool_friction: wp.array(dtype=T),
                         tool_pos: wp.array2d(dtype=vec), tool_rot: wp.array2d(dtype=mat),
                         grid_v: wp.array(dtype=vec)):
            node = wp.tid()
            m = grid_m[node]
            if m <= T(0.0):
                grid_v[node] = vec(T(0.0))
                return
            stride = nz_stride(n_grid)
            i = node // (n_grid * stride)
            j = (node // stride) % n_grid
            k = node % stride
            vel = grid_mv[node] / m + dt * gravity
            xw = make_vec(T(float(i)), T(float(j)), T(float(k))) * dx
            for t in range(n_tools):
                vel = _soft_contact(vel, m, xw, dt, tool_shape[t], tool_size[t], tool_softness[t],
                                    tool_friction[t], tool_pos[s, t], tool_rot[s, t],
                                    tool_pos[s + 1, t], tool_rot[s + 1, t])
            lo = bound
            hi = n_grid - bound
            keep0 = wp.where((i < lo and vel[0] < T(0.0)) or (i > hi and vel[0] > T(0.0)), T(0.0), T(1.0))
            keep1 = wp.where((j < lo and vel[1] < T(0.0)) or (j > hi and vel[1] > T(0.0)), T(0.0), T(1.0))
            keep2 = wp.where((k < lo and third(vel) < T(0.0)) or (k > hi and third(vel) > T(0.0)),
                             T(0.0), T(1.0))
            grid_v[node] = wp.cw_mul(vel, make_vec(keep0, keep1, keep2))

        return wp.kernel(_grid_update, name=f"mpm_grid_update_{n_tools}tools_{tag}",
                         module=f"{module}_grid{n_tools}")

    @kernel
    def _g2p(x: wp.array(dtype=vec), v: wp.array(dtype=vec), C: wp.array(dtype=mat),
             birth: wp.array(dtype=int), s: int, grid_v: wp.array(dtype=vec),
             dt: T, inv_dx: T, n_grid: int, x_lo: T, x_hi: T,
             spawn_tool: wp.array(dtype=int), spawn_offset: wp.array(dtype=vec),
             spawn_velocity: wp.array(dtype=vec),
             tool_pos: wp.array2d(dtype=vec), tool_rot: wp.array2d(dtype=mat),
             x_out: wp.array(dtype=vec), v_out: wp.array(dtype=vec), C_out: wp.array(dtype=mat),
             status: wp.array(dtype=int)):
        p = wp.tid()
        b = birth[p]
        if b > s + 1:  # still parked
            x_out[p] = x[p]
            v_out[p] = v[p]
            C_out[p] = C[p]
            return
        if b == s + 1:  # injected now, from its tool's pose at the end of this substep
            t = spawn_tool[p]
            R = tool_rot[s + 1, t]
            xs = tool_pos[s + 1, t] + R @ spawn_offset[p]
            xsc = wp.min(wp.max(xs, vec(x_lo)), vec(x_hi))  # a spawn point outside the grid is clamped
            if wp.length_sq(xsc - xs) > T(0.0):
                wp.atomic_add(status, 0, 1)
            x_out[p] = xsc
            v_out[p] = R @ spawn_velocity[p]
            C_out[p] = mat(T(0.0))
            return
        b0, b1, b2, fx, W = _stencil(x[p], inv_dx)
        # C = 4/dx^2 sum w v_i (x_i - x_p)^T = (4/dx) (sum w v_i o^T - v fx^T)
        new_v = vec(T(0.0))
        S = mat(T(0.0))
        for i in range(3):
            for j in range(3):
                for k in range(NZ):
                    w = stencil_weight(W, i, j, k)
                    offset = make_vec(T(float(i)), T(float(j)), T(float(k)))
                    node = ((b0 + i) * n_grid + (b1 + j)) * nz_stride(n_grid) + (b2 + k)
                    wv = w * grid_v[node]
                    new_v = new_v + wv
                    S = S + wp.outer(wv, offset)
        new_C = (T(4.0) * inv_dx) * (S - wp.outer(new_v, fx))
        xn = x[p] + dt * new_v
        if not (wp.isfinite(xn[0]) and wp.isfinite(xn[1]) and wp.isfinite(third(xn))):
            wp.atomic_add(status, 1, 1)
            xn = vec(T(0.5) * (x_lo + x_hi))
        xc = wp.min(wp.max(xn, vec(x_lo)), vec(x_hi))
        if wp.length_sq(xc - xn) > T(0.0):
            wp.atomic_add(status, 0, 1)
        x_out[p] = xc
        v_out[p] = new_v
        C_out[p] = new_C

    @fn
    def _inside(x: vec, lo: T, hi: T) -> vec:
        """Per axis 1 where ``lo < x < hi``, else 0: the adjoint mask of the clamp to [lo, hi]."""
        return make_vec(wp.where(x[0] > lo and x[0] < hi, T(1.0), T(0.0)),
                        wp.where(x[1] > lo and x[1] < hi, T(1.0), T(0.0)),
                        wp.where(third(x) > lo and third(x) < hi, T(1.0), T(0.0)))

    @kernel
    def _g2p_adjoint(x: wp.array(dtype=vec), v: wp.array(dtype=vec), C: wp.array(dtype=mat),
                     birth: wp.array(dtype=int), s: int, grid_v: wp.array(dtype=vec),
                     dt: T, inv_dx: T, n_grid: int, x_lo: T, x_hi: T,
                     spawn_tool: wp.array(dtype=int), spawn_offset: wp.array(dtype=vec),
                     spawn_velocity: wp.array(dtype=vec),
                     tool_pos: wp.array2d(dtype=vec), tool_rot: wp.array2d(dtype=mat),
                     adj_x_out: wp.array(dtype=vec), adj_v_out: wp.array(dtype=vec),
                     adj_C_out: wp.array(dtype=mat), adj_x: wp.array(dtype=vec), adj_v: wp.array(dtype=vec),
                     adj_C: wp.array(dtype=mat), adj_grid_v: wp.array(dtype=vec),
                     adj_tool_pos: wp.array2d(dtype=vec), adj_tool_rot: wp.array2d(dtype=mat)):
        """Hand-written adjoint of ``g2p`` (same arguments, then the adjoints of its outputs
        and inputs); Warp's generated one costs 3-4x the forward."""
        p = wp.tid()
        b = birth[p]
        gx = adj_x_out[p]
        gvel = adj_v_out[p]
        if b > s + 1:  # parked: identity
            adj_x[p] = adj_x[p] + gx
            adj_v[p] = adj_v[p] + gvel
            adj_C[p] = adj_C[p] + adj_C_out[p]
            return
        if b == s + 1:  # spawned from tool t's pose (clamped: adjoint only strictly inside)
            t = spawn_tool[p]
            xs = tool_pos[s + 1, t] + tool_rot[s + 1, t] @ spawn_offset[p]
            g_xs = wp.cw_mul(gx, _inside(xs, x_lo, x_hi))
            wp.atomic_add(adj_tool_pos, s + 1, t, g_xs)
            wp.atomic_add(adj_tool_rot, s + 1, t,
                          wp.outer(g_xs, spawn_offset[p]) + wp.outer(gvel, spawn_velocity[p]))
            return
        b0, b1, b2, fx, W = _stencil(x[p], inv_dx)
        new_v = vec(T(0.0))
        for i in range(3):
            for j in range(3):
                for k in range(NZ):
                    node = ((b0 + i) * n_grid + (b1 + j)) * nz_stride(n_grid) + (b2 + k)
                    new_v = new_v + stencil_weight(W, i, j, k) * grid_v[node]
        xn = x[p] + dt * new_v
        # clamp to [x_lo, x_hi] passes the adjoint only strictly inside (as wp.min/wp.max do)
        g_xn = wp.cw_mul(gx, _inside(xn, x_lo, x_hi))
        g_S = (T(4.0) * inv_dx) * adj_C_out[p]  # C = (4/dx) (S - new_v fx^T)
        g_newv = gvel + dt * g_xn - g_S @ fx
        adj_fx = -(wp.transpose(g_S) @ new_v)
        r0 = v3(T(0.0))
        r1 = v3(T(0.0))
        r2 = v3(T(0.0))
        for i in range(3):
            for j in range(3):
                for k in range(NZ):
                    offset = make_vec(T(float(i)), T(float(j)), T(float(k)))
                    node = ((b0 + i) * n_grid + (b1 + j)) * nz_stride(n_grid) + (b2 + k)
                    g_node = g_newv + g_S @ offset
                    wp.atomic_add(adj_grid_v, node, stencil_weight(W, i, j, k) * g_node)
                    adj_w = wp.dot(grid_v[node], g_node)
                    d0, d1, d2 = weight_partials(W, i, j, k)
                    r0 = r0 + (adj_w * d0) * row_unit(i)
                    r1 = r1 + (adj_w * d1) * row_unit(j)
                    r2 = r2 + (adj_w * d2) * row_unit(k)
        adj_fx = adj_fx + make_vec(wp.dot(r0, _dweights(fx[0])), wp.dot(r1, _dweights(fx[1])),
                                   wp.dot(r2, _dweights(third(fx))))
        adj_x[p] = adj_x[p] + g_xn + inv_dx * adj_fx

    @kernel
    def _body_reduce(x: wp.array(dtype=vec), p_body: wp.array(dtype=int), p_mass: wp.array(dtype=T),
                     rest: wp.array(dtype=vec), body_sum: wp.array(dtype=vec), body_A: wp.array(dtype=mat)):
        p = wp.tid()
        b = p_body[p]
        if b < 0:
            return
        m = p_mass[p]
        wp.atomic_add(body_sum, b, m * x[p])
        wp.atomic_add(body_A, b, m * wp.outer(x[p], rest[p]))

    @kernel
    def _body_project(x_prev: wp.array(dtype=vec), x_adv: wp.array(dtype=vec), v_adv: wp.array(dtype=vec),
                      p_body: wp.array(dtype=int), rest: wp.array(dtype=vec), body_mass: wp.array(dtype=T),
                      body_sum: wp.array(dtype=vec), body_A: wp.array(dtype=mat), dt: T, x_lo: T, x_hi: T,
                      x_out: wp.array(dtype=vec), v_out: wp.array(dtype=vec), status: wp.array(dtype=int)):
        """Rigid particles go to c + R r0 (R = polar(sum m x r0^T)), clamped to [x_lo, x_hi] like
        g2p's positions (the fit can rotate a body that g2p clamped at a wall past that wall, and a
        particle below dx/2 would scatter outside the grid), v = (x_new - x_prev)/dt."""
        p = wp.tid()
        b = p_body[p]
        if b < 0:
            x_out[p] = x_adv[p]
            v_out[p] = v_adv[p]
            return
        c = body_sum[b] / body_mass[b]
        R = polar_rotation(body_A[b])
        xn = c + R @ rest[p]
        xc = wp.min(wp.max(xn, vec(x_lo)), vec(x_hi))
        if wp.length_sq(xc - xn) > T(0.0):
            wp.atomic_add(status, 0, 1)
        x_out[p] = xc
        v_out[p] = (xc - x_prev[p]) / dt

    @kernel
    def _add_vec(src: wp.array(dtype=vec), dst: wp.array(dtype=vec)):
        i = wp.tid()
        dst[i] = dst[i] + src[i]

    return MPMKernels(dim=dim, scalar=T, vec=vec, mat=mat, p2g_stress=_p2g_stress, p2g_scatter=_p2g_scatter,
                      p2g_scatter_adjoint=_p2g_scatter_adjoint, g2p_adjoint=_g2p_adjoint, make_grid_update=make_grid_update,
                      g2p=_g2p, body_reduce=_body_reduce, body_project=_body_project,
                      add_vec=_add_vec)
