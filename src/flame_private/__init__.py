"""flame-private: privacy-first federated learning for glioblastoma radiotherapy outcomes."""

__version__ = "0.1.0"
