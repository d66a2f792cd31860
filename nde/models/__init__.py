"""Neural differential equation models on the nde core."""
from nde.models.cnf import CNF
from nde.models.latent_ode import LatentODE, ODERNNEncoder
from nde.models.latent_sde import DiagonalDiffusion, LatentSDE
from nde.models.neural_cde import CDEVectorField, MLPCDEField, NeuralCDE, cdeint
from nde.models.neural_ode import NeuralODE
from nde.models.sde_gan import CDEDiscriminator, LipSwish, SDEGenerator, clip_lipschitz_

__all__ = ["NeuralODE", "NeuralCDE", "cdeint", "CDEVectorField", "MLPCDEField", "LatentODE", "ODERNNEncoder",
           "LatentSDE", "DiagonalDiffusion", "CNF", "SDEGenerator", "CDEDiscriminator", "LipSwish",
           "clip_lipschitz_"]
