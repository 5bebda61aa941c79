from setuptools import find_packages, setup

setup(
    name="nncf-wcam",
    version="0.1.0",
    description="Attribution-preserving compression for NNCF: Weighted Collapsed Attribution Matching "
    "and saliency-guided training as NNCF algorithms, with OpenVINO IR export.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["nncf_wcam", "nncf_wcam.*"]),
    package_data={"nncf_wcam": ["configs/*.json"]},
    install_requires=[
        # torch is pinned so that no dependency can pull another (CUDA) build.
        "torch==2.13.*",
        "nncf==2.19.*",
        "onnx",
        "openvino",
        "captum",
        "numpy",
        "scikit-learn",
        "matplotlib",
        "tqdm",
        "ninja",
    ],
    extras_require={"test": ["pytest", "hypothesis", "psutil"]},
    entry_points={"console_scripts": ["nncf-wcam=nncf_wcam.cli:main"]},
)
