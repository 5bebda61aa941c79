"""Demo models and data: the configs' models, scikit-learn's digits (the embedded default), the MNIST IDX
reader, and the cluttered-digits localization set. Nothing is downloaded."""
