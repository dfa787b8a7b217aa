"""The study's web server: a Flask app over one study (`create_app`).

API (JSON; every bad request is a 4xx with {"error": ...} and writes nothing):
  GET  /                       the page
  POST /api/session            {"rater_id"} -> {"rater_id", "remaining": [ids], "done", "total"}
  GET  /images/<image_id>      the PNG of a study image (known opaque ids only)
  POST /api/judgments          {"rater_id", "image_id", "answer": "real"|"fake",
                                "response_ms"} -> 201 {"done", "total"}; 409 if judged
  GET  /api/score/<rater_id>   the rater's main-block errors, once every image is judged
                               (the final screen); 403 before
"""

import math
import re

import flask

from cnnjax.human_eval.page import PAGE
from cnnjax.human_eval.storage import DuplicateJudgment
from cnnjax.human_eval.study import Study

RATER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
IMAGE_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_RESPONSE_MS = 24 * 3600 * 1000.0


def _error(message: str, status: int):
  return flask.jsonify(error=message), status


def _rater(value) -> str | None:
  return value if isinstance(value, str) and RATER_ID.match(value) else None


def create_app(study: Study) -> flask.Flask:
  """The Flask app serving `study` (its images by opaque id, never by path)."""
  app = flask.Flask(__name__)
  app.config["MAX_CONTENT_LENGTH"] = 16 * 1024   # Judgments are tiny.

  @app.after_request
  def _no_cache(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response

  @app.get("/")
  def page():
    return flask.Response(PAGE, mimetype="text/html")

  def _progress(rater_id: str) -> tuple[list[str], int, int]:
    judged = {j["image_id"] for j in study.store.judgments(rater_id)}
    order = study.order_for(rater_id)
    return [i for i in order if i not in judged], len(judged), len(order)

  @app.post("/api/session")
  def session():
    body = flask.request.get_json(silent=True)
    rater_id = _rater(body.get("rater_id")) if isinstance(body, dict) else None
    if rater_id is None:
      return _error("rater_id must be 1-64 letters, digits or _.@-", 400)
    remaining, done, total = _progress(rater_id)
    return flask.jsonify(rater_id=rater_id, remaining=remaining, done=done, total=total)

  @app.get("/images/<image_id>")
  def image(image_id: str):
    path = study.image_path(image_id) if IMAGE_ID.match(image_id) else None
    if path is None:
      return _error("unknown image", 404)
    return flask.send_file(path, mimetype="image/png")

  @app.post("/api/judgments")
  def judge():
    body = flask.request.get_json(silent=True)
    if not isinstance(body, dict):
      return _error("the body must be a JSON object", 400)
    rater_id, image_id = _rater(body.get("rater_id")), body.get("image_id")
    answer, response_ms = body.get("answer"), body.get("response_ms")
    if rater_id is None:
      return _error("rater_id must be 1-64 letters, digits or _.@-", 400)
    if not isinstance(image_id, str) or not IMAGE_ID.match(image_id):
      return _error("image_id must be an image id of this study", 400)
    if answer not in ("real", "fake"):
      return _error("answer must be 'real' or 'fake'", 400)
    if (isinstance(response_ms, bool) or not isinstance(response_ms, (int, float))
        or not math.isfinite(response_ms) or not 0 <= response_ms <= MAX_RESPONSE_MS):
      return _error("response_ms must be a number of milliseconds >= 0", 400)
    try:
      study.store.add_judgment(rater_id=rater_id, image_id=image_id, answer=answer,
                               response_ms=response_ms)
    except KeyError:
      return _error("unknown image", 404)
    except DuplicateJudgment:
      _, done, total = _progress(rater_id)
      return flask.jsonify(error="already judged", done=done, total=total), 409
    _, done, total = _progress(rater_id)
    return flask.jsonify(done=done, total=total), 201

  @app.get("/api/score/<rater_id>")
  def score(rater_id: str):
    if _rater(rater_id) is None:
      return _error("unknown rater", 404)
    remaining, _, _ = _progress(rater_id)
    if remaining:   # Scores before the end would tell, answer by answer, the truth.
      return _error("finish the study first", 403)
    main = [j for j in study.store.judgments(rater_id) if j["block"] == "main"]
    errors = sum(j["answer"] != j["truth"] for j in main)
    return flask.jsonify(judgments=len(main), errors=errors,
                         error_rate=errors / len(main) if main else None)

  return app
