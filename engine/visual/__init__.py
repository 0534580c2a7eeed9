"""The visual side: GAN generator, keyframe worker, all-sky renderer and window."""
