"""Stand-ins for what cannot be downloaded: tiny random-weight models in the hub's layouts (encoders, diffusion
pipelines, PowerPaint) and small synthetic datasets in the outside layouts (SynCD, MTG, DreamBench++). Tests, the
demo and the benchmarks feed them to the real loaders."""
