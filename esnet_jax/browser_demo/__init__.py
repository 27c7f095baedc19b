"""The browser demo: the static site built around an ONNX export (`site`), its local server
(`server`), the headless-browser driver that checks it (`driver`) and the page itself
(`web/`, onnxruntime-web)."""
