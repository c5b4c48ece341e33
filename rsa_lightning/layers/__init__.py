from rsa_lightning.layers.local_attention import LocalSelfAttention
from rsa_lightning.layers.rsa import RelationalSelfAttention

__all__ = ["LocalSelfAttention", "RelationalSelfAttention"]
