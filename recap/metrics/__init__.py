"""Pure measures: latent / text similarity, CLAP, music descriptors."""
