"""rsa_lightning: train, evaluate and compare Relational Self-Attention video networks."""

__version__ = "0.1.0"
