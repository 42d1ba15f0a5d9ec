"""Packaging of deepaas_like (console script ``deepaas-run``, framework extras)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "deepaas_like" / "__init__.py").read_text()).group(1)

FRAMEWORKS = {
    # skops: scikit-learn models without pickle (loaded with an explicit list of trusted types).
    # pandas: uploaded pipelines that pick their columns by name get a DataFrame.
    "sklearn": ["scikit-learn>=1.5", "joblib>=1.3", "skops>=0.10", "pandas>=2"],
    "tensorflow": ["tensorflow-cpu~=2.21.0"],
    # Exact pin: an open range makes pip download the CUDA build and several GB of wheels.
    "torch": ["torch==2.13.0"],
    # skl2onnx: optimize=onnx converts an uploaded scikit-learn model.
    "onnx": ["onnxruntime>=1.20", "onnx>=1.16", "skl2onnx>=1.17"],
    # the feature impact bar chart (Agg backend: no display needed)
    "plots": ["matplotlib>=3.8"],
    # prediction explanations: shap's model-agnostic explainers, run in a model's workers
    "explain": ["shap>=0.46,<0.52"],
}

setup(
    name="deepaas_like",
    version=VERSION,
    description="Serve machine-learning models behind a fast, validated, self-documenting REST API",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["deepaas_like", "deepaas_like.*"])
    + ["deepaas", "deepaas.model", "deepaas.model.v2"],
    # DEEPaaS v2 plugins import `deepaas.model.v2...`: a small compatibility package.
    package_dir={"deepaas": "deepaas_like/compat/deepaas"},
    # the what-if page at /ui/: plain HTML, JS and CSS served by the server itself
    package_data={"deepaas_like": ["ui/*"]},
    install_requires=[
        "aiohttp>=3.14,<3.15",
        # marshmallow 4 rejects missing=, description=, type= that DEEPaaS plugins use.
        "marshmallow>=3.26,<4",
        "webargs>=8.7,<9",
        "stevedore>=5,<6",
        "apispec>=6.8,<7",
        "swagger-ui-bundle>=1.1,<2",
        "orjson>=3.9",
        "packaging>=23",
        "prometheus-client>=0.20",
        # output_schema and input_schema of uploaded models are JSON Schemas.
        "jsonschema>=4.20",
        # --auth: HS256 JWTs as Datrics clients send them.
        "PyJWT>=2.8",
        # the server's state (jobs, registry, tokens): SQLite by default, PostgreSQL for replicas,
        # one schema migrated by Alembic
        "SQLAlchemy>=2.0.30,<2.2",
        "alembic>=1.13,<2",
        # DEEPaaS-era plugins import pkg_resources, which setuptools 82 removed.
        "setuptools>=65,<82",
        # models with their own requirements get environments built by uv (its CLI, driven as 0.13 prints)
        "uv>=0.13.9,<0.14",
    ],
    extras_require={
        **FRAMEWORKS,
        "all": sorted({req for reqs in FRAMEWORKS.values() for req in reqs}),
        # --store postgresql://...: psycopg 3 with its bundled libpq
        "postgresql": ["psycopg[binary]>=3.2,<4"],
        # --executor ray: model workers as Ray actors
        "ray": ["ray>=2.40,<3"],
        "test": [
            "pytest>=8",
            # make lint (make test and make check run it): lint and format
            "ruff~=0.17.6",
            # make lint: the types (mypy.ini), strict for the services and the engine
            "mypy~=2.4.1",
            "pytest-aiohttp>=1.1",
            "pytest-timeout>=2.3",
            "openapi-spec-validator>=0.7",
            # tests fit scikit-learn models on named columns, as users do
            "pandas>=2",
            # tests/e2e/test_fuzz.py drives its checks and coverage phase from Python, which move
            # between minor releases: the one it was written against, and its patches.
            "schemathesis~=4.32.5",
            # Swagger UI and the what-if page in Debian's chromium
            "playwright>=1.45",
            # tests/api/test_oip.py calls the Open Inference Protocol routes with Triton's own client
            "tritonclient[http]>=2.40",
            # the job, registry and auth suites run against a throwaway PostgreSQL too
            "psycopg[binary]>=3.2,<4",
            # tests/test_ray.py starts a local Ray head
            "ray>=2.40,<3",
            # tests/api/test_explain.py explains irisbench's predictions with shap
            "shap>=0.46,<0.52",
        ],
    },
    entry_points={
        "console_scripts": [
            "deepaas-run=deepaas_like.cli.run:main",
            "deepaas-install-plugin=deepaas_like.cli.install_plugin:main",
            "deepaas-token=deepaas_like.cli.token:main",
            "deepaas-cli=deepaas_like.cli.cli:main",
            "deepaas-env=deepaas_like.cli.env_cli:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Framework :: AsyncIO",
        "Framework :: aiohttp",
    ],
)
