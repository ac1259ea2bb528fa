"""flame-private: privacy-first federated learning for glioblastoma radiotherapy outcomes."""

__version__ = "0.2.0"
