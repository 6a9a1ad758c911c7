"""imdb-train trainer: trains IMDB sentiment models (the only package that imports TensorFlow)."""
