"""check_loss.py GOT.json WANT.json TOL: the "loss" fields agree to TOL
relative (each file holds one JSON object, as colossus-run grads --json and
train_oracle.py loss-grads --json print)."""
import json
import sys

got = json.load(open(sys.argv[1]))["loss"]
want = json.load(open(sys.argv[2]))["loss"]
tol = float(sys.argv[3])
rel = abs(got - want) / max(abs(want), 1e-30)
print(f"loss got={got:.9g} want={want:.9g} rel={rel:.2e} (tol {tol:.0e}) "
      + ("OK" if rel <= tol else "FAIL"))
sys.exit(0 if rel <= tol else 1)
