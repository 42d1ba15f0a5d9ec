"""The built-in framework plugins of deepaas_like: serve an uploaded model file without code.

Registered in the ``deepaas_like.frameworks`` entry point group (see
:mod:`deepaas_like.frameworks` for the contract)::

    sklearn    -> deepaas_like_frameworks.sklearn:SklearnFramework   joblib | pickle | skops
    tensorflow -> deepaas_like_frameworks.keras:KerasFramework       keras | h5
    pytorch    -> deepaas_like_frameworks.torch:TorchFramework       torchscript | pt2
    onnx       -> deepaas_like_frameworks.onnx:OnnxFramework         onnx

Importing a framework module imports no model library (nor numpy): the server sniffs
uploads with them; each ``load()`` imports its library in the worker that loads.
"""
