"""Jotter's background worker, started as ``python worker.py`` from this folder.

Like many rq workers it puts the project folder on ``sys.path`` itself, at the end, and
imports the app for its settings and models.
"""

import sys

sys.path.append(".")

import app

if __name__ == "__main__":
    print(app.__file__)  # a real worker would now listen on its queues
