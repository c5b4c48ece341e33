from rsa_lightning.layers.rsa import RelationalSelfAttention

__all__ = ["RelationalSelfAttention"]
