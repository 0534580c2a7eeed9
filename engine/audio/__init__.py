"""The audio side: VAE model, streaming synthesis, safety stage and the output process."""
