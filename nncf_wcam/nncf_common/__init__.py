"""What both NNCF generations' PyTorch backends need from nncf-wcam: here, NNCF's fake quantizers made
differentiable twice on CUDA (`second_order`). Imports `nncf.torch`; works with NNCF 2.19 and 3.x alike."""
