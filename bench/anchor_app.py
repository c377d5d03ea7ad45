"""The anchor: a Flask "hello", as a Python team deploys it by default (gunicorn's sync
worker). Every broker figure is printed as a ratio to this one, measured in the same run."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "Hello, World!"
