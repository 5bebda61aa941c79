"""Outputs that lose nothing: atomic file and folder writes, staging-name cleanup, the output-folder lock.
No NNCF, no OpenVINO."""
