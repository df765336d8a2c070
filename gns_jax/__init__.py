"""gns_jax: learning-rate schedules learned by a graph-network PPO agent (Xiong et al., ICLR 2022, "GNS")."""

__version__ = "0.1.0"
