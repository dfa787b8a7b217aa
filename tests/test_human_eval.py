"""Human evaluation: the study's storage, API, scores and one real browser session."""

import json
import os
import pathlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest

from cnnjax.errors import ConfigError
from cnnjax.human_eval import scores, serve
from cnnjax.human_eval.app import create_app
from cnnjax.human_eval.study import StudySettings, create_study, open_study
from conftest import REPO_ROOT

SETTINGS = StudySettings(num_real=4, num_fake=4, num_qualification=2, seed=3)


@pytest.fixture(scope="module")
def study_workdir(tiny_gan_run, tmp_path_factory) -> pathlib.Path:
  """A copy of the tiny GAN run (the session fixture stays read-only) with a study."""
  workdir = tmp_path_factory.mktemp("human_eval") / "run"
  shutil.copytree(tiny_gan_run, workdir, ignore=shutil.ignore_patterns(".writer.lock"))
  create_study(str(workdir), SETTINGS)
  return workdir


def _count(workdir) -> int:
  with sqlite3.connect(workdir / "human_eval" / "study.sqlite") as db:
    return db.execute("SELECT count(*) FROM judgments").fetchone()[0]


def test_study_is_balanced_opaque_and_stored(study_workdir):
  study = open_study(str(study_workdir))
  images = study.store.images()
  assert len(images) == 4 + 4 + 2
  main = [i for i in images if i["block"] == "main"]
  assert sorted(i["truth"] for i in main) == ["fake"] * 4 + ["real"] * 4
  assert sorted(i["truth"] for i in images if i["block"] == "qualification") == [
      "fake", "real"]
  for image in images:   # File names are the opaque ids: nothing says real or fake.
    assert image["file_name"] == image["image_id"] + ".png"
    assert len(image["image_id"]) == 16 and int(image["image_id"], 16) >= 0
  files = sorted(os.listdir(study_workdir / "human_eval" / "images"))
  assert files == sorted(i["file_name"] for i in images)
  order = study.order_for("alice")
  assert order == study.order_for("alice") and sorted(order) == sorted(
      i["image_id"] for i in images)
  assert {i["block"] for i in images if i["image_id"] in order[:2]} == {"qualification"}
  with sqlite3.connect(study.store.path) as db:
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_api_stores_judgments_and_refuses_bad_requests(study_workdir):
  client = create_app(open_study(str(study_workdir))).test_client()
  assert b"Real or generated?" in client.get("/").data
  session = client.post("/api/session", json={"rater_id": "bob"}).get_json()
  assert session["total"] == 10 and session["done"] == 0
  assert "real" not in json.dumps(session) and "fake" not in json.dumps(session)
  first = session["remaining"][0]
  image = client.get(f"/images/{first}")
  assert image.status_code == 200 and image.data.startswith(b"\x89PNG")

  before = _count(study_workdir)
  good = {"rater_id": "bob", "image_id": first, "answer": "real", "response_ms": 812.5}
  bad_requests = [
      ("/api/judgments", None), ("/api/judgments", "not json"), ("/api/judgments", [1]),
      ("/api/judgments", good | {"rater_id": "../../etc"}),
      ("/api/judgments", good | {"rater_id": ""}),
      ("/api/judgments", good | {"image_id": "0" * 16}),   # well formed, unknown: 404
      ("/api/judgments", good | {"image_id": "../study.sqlite"}),
      ("/api/judgments", good | {"answer": "maybe"}),
      ("/api/judgments", good | {"response_ms": -1}),
      ("/api/judgments", good | {"response_ms": "12"}),
      ("/api/judgments", good | {"response_ms": True}),
      ("/api/session", {"rater_id": 7}),
  ]
  for url, body in bad_requests:
    if isinstance(body, str):
      response = client.post(url, data=body, content_type="application/json")
    else:
      response = client.post(url, json=body)
    assert 400 <= response.status_code < 500, (body, response.status_code)
    assert "error" in response.get_json()
  for path in ("/images/..%2Fstudy.sqlite", "/images/" + "0" * 16, "/images/x.png"):
    assert client.get(path).status_code == 404
  assert client.get("/api/score/bob").status_code == 403   # Not finished: no truth leak.
  assert _count(study_workdir) == before

  assert client.post("/api/judgments", json=good).status_code == 201
  duplicate = client.post("/api/judgments", json=good | {"answer": "fake"})
  assert duplicate.status_code == 409 and _count(study_workdir) == before + 1
  stored = open_study(str(study_workdir)).store.judgments("bob")
  assert [(j["image_id"], j["answer"], j["response_ms"]) for j in stored] == [
      (first, "real", 812.5)]
  assert stored[0]["truth"] in ("real", "fake") and stored[0]["timestamp"] > 0

  # A restarted server (a new app over the reopened study) continues the same study.
  create_study(str(study_workdir), StudySettings(num_real=1, num_fake=1))   # no-op
  again = create_app(open_study(str(study_workdir))).test_client()
  resumed = again.post("/api/session", json={"rater_id": "bob"}).get_json()
  assert resumed["done"] == 1 and resumed["remaining"] == session["remaining"][1:]


def _direct_bootstrap(errors_r, counts_r, seed, num):
  rng = np.random.RandomState(seed)   # Another generator: agreement is statistical.
  rates = []
  for _ in range(num):
    picks = rng.randint(0, len(errors_r), len(errors_r))
    rates.append(errors_r[picks].sum() / counts_r[picks].sum())
  return np.percentile(rates, [2.5, 97.5])


def test_scores_and_intervals_against_direct_computation():
  rng = np.random.default_rng(0)
  judgments = []
  for rater in range(30):
    skill = rng.uniform(0.2, 0.5)
    for item in range(20):
      truth = "real" if item % 2 else "fake"
      wrong = rng.random() < skill
      answer = ("fake" if truth == "real" else "real") if wrong else truth
      judgments.append(dict(rater_id=f"r{rater:02d}", truth=truth, answer=answer,
                            block="main", source="run"))
  judgments.append(dict(rater_id="r00", truth="real", answer="fake", block="qualification",
                        source="dataset:test"))
  result = scores.study_scores(judgments, qualification_threshold=0.5, seed=1)
  main = [j for j in judgments if j["block"] == "main"]
  # r00 failed its one qualification image: left out of the pooled score.
  assert result["excluded_raters"] == ["r00"]
  kept = [j for j in main if j["rater_id"] != "r00"]
  direct = np.mean([j["answer"] != j["truth"] for j in kept])
  assert result["pooled"]["all"]["error_rate"] == pytest.approx(direct)
  fakes = [j for j in kept if j["truth"] == "fake"]
  assert result["pooled"]["fake"]["error_rate"] == pytest.approx(
      np.mean([j["answer"] == "real" for j in fakes]))
  r05 = [j for j in main if j["rater_id"] == "r05"]
  assert result["raters"]["r05"]["error_rate"] == pytest.approx(
      np.mean([j["answer"] != j["truth"] for j in r05]))

  errors_r = np.array([sum(j["answer"] != j["truth"] for j in kept if j["rater_id"] == r)
                       for r in result["qualified_raters"]], float)
  counts_r = np.full(len(errors_r), 20.0)
  low, high = result["pooled"]["all"]["ci95"]
  direct_low, direct_high = _direct_bootstrap(errors_r, counts_r, 0, 4000)
  assert abs(low - direct_low) < 0.01 and abs(high - direct_high) < 0.01
  # Equal counts: the bootstrap interval approaches mean +- 1.96 sd / sqrt(R).
  rates = errors_r / counts_r
  half = 1.96 * rates.std() / np.sqrt(len(rates))
  assert (high - low) / 2 == pytest.approx(half, rel=0.15)
  assert low < direct < high


def test_report_and_command_errors(study_workdir, tiny_gan_run, tmp_path):
  with pytest.raises(ConfigError, match="has no human-evaluation study"):
    serve.report_study(str(tmp_path))
  result = serve.report_study(str(study_workdir))
  written = json.loads((study_workdir / "human_eval.json").read_text())
  assert written["raters"]["bob"]["judgments"] == result["raters"]["bob"]["judgments"]
  assert "HYPE-infinity" in serve.describe(result)
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    with pytest.raises(ConfigError, match="Cannot serve on 127.0.0.1"):
      serve.make_study_server(str(study_workdir), SETTINGS, host="127.0.0.1",
                              port=taken.getsockname()[1])
  completed = subprocess.run(
      [sys.executable, "run.py", "human_eval", f"--workdir={tiny_gan_run}", "--report"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert completed.returncode == 2
  assert completed.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "no human-evaluation study" in completed.stderr
  assert not (tiny_gan_run / "human_eval").exists()


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                    reason="Debian's chromium and chromium-driver are not installed "
                    "(.ci/run installs them: apt-get install -y chromium chromium-driver)")
def test_a_rater_in_a_real_browser(study_workdir):
  webdriver = pytest.importorskip("selenium.webdriver")
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  server = serve.make_study_server(str(study_workdir), SETTINGS, host="127.0.0.1", port=0)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                   "--window-size=800,700"):
    options.add_argument(argument)
  driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
  try:
    driver.get(f"http://127.0.0.1:{server.server_port}/")
    assert "real" not in driver.current_url
    driver.find_element(By.ID, "rater").send_keys("carol\n")
    wait = WebDriverWait(driver, 20)
    body = driver.find_element(By.TAG_NAME, "body")
    for index in range(10):
      wait.until(lambda d, i=index: d.find_element(By.ID, "progress").text
                 == f"Image {i + 1} of 10" and d.execute_script(
                     "return document.getElementById('image').complete && !busy"))
      src = driver.find_element(By.ID, "image").get_attribute("src")
      assert "real" not in src and "fake" not in src
      body.send_keys("r" if index % 3 else "f")
    wait.until(lambda d: d.find_element(By.ID, "score").text)
    final = driver.find_element(By.ID, "score").text
    screenshot = os.environ.get("CNNJAX_HUMAN_EVAL_SCREENSHOT")
    if screenshot:
      driver.get(f"http://127.0.0.1:{server.server_port}/")
      driver.find_element(By.ID, "rater").send_keys("dave\n")
      wait.until(lambda d: d.execute_script(
          "return document.getElementById('image').complete && !busy"))
      driver.save_screenshot(screenshot)
  finally:
    driver.quit()
    server.shutdown()
  stored = open_study(str(study_workdir)).store.judgments("carol")
  assert len(stored) == 10
  assert [j["answer"] for j in stored] == ["real" if i % 3 else "fake" for i in range(10)]
  main = [j for j in stored if j["block"] == "main"]
  errors = sum(j["answer"] != j["truth"] for j in main)
  assert f"your error rate is {100 * errors / len(main):.1f}% ({errors} wrong)" in final
