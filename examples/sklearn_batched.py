"""A batched scikit-learn classifier: iris species from four flower measurements.

The model is trained at start-up, in each worker's ``setup``, on the iris dataset that ships with
scikit-learn (nothing is downloaded). Requests that arrive together are answered by one
``predict_proba`` call: litkit groups up to ``--max-batch-size`` queued requests, waiting at most
``--batch-timeout`` seconds for company. Needs ``pip install scikit-learn numpy``.

Run it as a script; it serves until Ctrl+C::

    python examples/sklearn_batched.py             # http://127.0.0.1:8000/predict
    python examples/sklearn_batched.py --port 0    # any free port: the first line printed says which

Call it from another terminal::

    $ curl -X POST http://127.0.0.1:8000/predict -H 'Content-Type: application/json' -d '{"features": [5.1, 3.5, 1.4, 0.2]}'
    {"species":"setosa","probabilities":{"setosa":0.9817,"versicolor":0.0183,"virginica":0.0}}

Each batch the model sees is printed (``litkit example: predicted a batch of 8``), so sending many
requests at once (e.g. ``xargs -P 8``) shows the batching at work.
"""

from __future__ import annotations

import argparse
from typing import Any

import litkit


class IrisClassifier(litkit.LitAPI):
    """Logistic regression on the bundled iris dataset, one ``predict_proba`` call per batch."""

    def setup(self, device: str) -> None:
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        iris = load_iris()
        self.species = [str(name) for name in iris.target_names]
        self.model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)

    def decode_request(self, request: Any) -> Any:
        import numpy

        features = request.get("features") if isinstance(request, dict) else None
        if not isinstance(features, list) or len(features) != 4 or not all(isinstance(v, (int, float)) for v in features):
            raise litkit.HTTPError(
                422, 'send {"features": [sepal length, sepal width, petal length, petal width]} in cm, e.g. [5.1, 3.5, 1.4, 0.2]'
            )
        return numpy.asarray(features, dtype=float)

    # The default batch() stacks the decoded arrays into one (N, 4) array and the default
    # unbatch() splits predict's (N, 3) answer back into rows, one per request.

    def predict(self, batch: Any) -> Any:
        print(f"litkit example: predicted a batch of {len(batch)}", flush=True)
        return self.model.predict_proba(batch)

    def encode_response(self, probabilities: Any) -> dict[str, Any]:
        best = int(probabilities.argmax())
        return {
            "species": self.species[best],
            "probabilities": {name: round(float(p), 4) for name, p in zip(self.species, probabilities)},
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a batched iris classifier trained at start-up.")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: 8000)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="requests per predict call at most (default: 16)")
    parser.add_argument("--batch-timeout", type=float, default=0.01, help="seconds a partial batch waits (default: 0.01)")
    args = parser.parse_args(argv)
    litkit.run(IrisClassifier(), port=args.port, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)


if __name__ == "__main__":
    main()
