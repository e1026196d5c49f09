"""Model serving: the ModelServer base class, model routers and ensembles, adaptive batching."""
