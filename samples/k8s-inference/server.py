"""A small inference service: POST /predict {"features": [sepal_length, sepal_width, petal_length, petal_width]}."""

import json
import math
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

with open(os.environ.get("MODEL_FILE", "model.json")) as handle:
    MODEL = json.load(handle)


def predict(features):
    if len(features) != len(MODEL["features"]):
        raise ValueError("expected %d features: %s" % (len(MODEL["features"]), ", ".join(MODEL["features"])))
    scores = [sum(w * x for w, x in zip(row, features)) + b for row, b in zip(MODEL["weights"], MODEL["bias"])]
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    probabilities = [e / sum(exps) for e in exps]
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {"class": MODEL["classes"][best], "probabilities": dict(zip(MODEL["classes"], probabilities))}


class Handler(BaseHTTPRequestHandler):
    def _answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            return self._answer(200, {"status": "ok"})
        return self._answer(200, {"model": MODEL["name"], "usage": "POST /predict {\"features\": [5.1, 3.5, 1.4, 0.2]}"})

    def do_POST(self):
        if self.path != "/predict":
            return self._answer(404, {"error": "not found"})
        try:
            length = int(self.headers.get("Content-Length", "0"))
            features = [float(x) for x in json.loads(self.rfile.read(length))["features"]]
            return self._answer(200, predict(features))
        except (ValueError, KeyError, TypeError) as error:
            return self._answer(400, {"error": str(error)})


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    print("serving %s on port %d" % (MODEL["name"], port), flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
