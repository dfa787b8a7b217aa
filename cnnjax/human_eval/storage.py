"""The study database: images of the study and every judgment, in SQLite.

One file per study (`DIR/human_eval/study.sqlite`), in WAL mode so that the server's
threads read while one writes; each judgment is its own transaction, so a crash or
Ctrl-C loses nothing already answered, and a restarted server continues the same study.
"""

import contextlib
import os
import sqlite3
import time
from typing import Any, Iterator

from cnnjax.errors import WorkdirError

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
  image_id TEXT PRIMARY KEY,          -- opaque: says nothing of the truth
  truth TEXT NOT NULL CHECK (truth IN ('real', 'fake')),
  block TEXT NOT NULL CHECK (block IN ('qualification', 'main')),
  source TEXT NOT NULL,               -- 'dataset:SPLIT' or the run directory
  file_name TEXT NOT NULL             -- under DIR/human_eval/images/
);
CREATE TABLE IF NOT EXISTS judgments (
  judgment_id INTEGER PRIMARY KEY AUTOINCREMENT,
  rater_id TEXT NOT NULL,
  image_id TEXT NOT NULL REFERENCES images (image_id),
  truth TEXT NOT NULL,
  answer TEXT NOT NULL CHECK (answer IN ('real', 'fake')),
  response_ms REAL NOT NULL,
  timestamp REAL NOT NULL,
  UNIQUE (rater_id, image_id)
);
"""


class DuplicateJudgment(Exception):
  """The rater has already judged this image."""


class StudyStore:
  """The SQLite file of one study; a new connection per call (thread-safe)."""

  def __init__(self, path: str):
    self.path = path

  @contextlib.contextmanager
  def _connect(self) -> Iterator[sqlite3.Connection]:
    try:
      connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
    except sqlite3.Error as error:
      raise WorkdirError(f"Cannot open the study database {self.path}: {error}.") from None
    try:
      connection.row_factory = sqlite3.Row
      connection.execute("PRAGMA journal_mode=WAL")
      connection.execute("PRAGMA synchronous=FULL")
      yield connection
    finally:
      connection.close()

  def create(self, settings: dict[str, Any], images: list[dict[str, str]]) -> None:
    """Writes a new study's settings and images in one transaction."""
    with self._connect() as db:
      db.executescript(SCHEMA)
      db.execute("BEGIN IMMEDIATE")
      db.executemany("INSERT INTO settings VALUES (?, ?)",
                     [(key, str(value)) for key, value in settings.items()])
      db.executemany("INSERT INTO images VALUES (:image_id, :truth, :block, :source, "
                     ":file_name)", images)
      db.execute("COMMIT")

  def exists(self) -> bool:
    if not os.path.exists(self.path):
      return False
    with self._connect() as db:
      return db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'images'"
                        ).fetchone()[0] == 1

  def settings(self) -> dict[str, str]:
    with self._connect() as db:
      return dict(db.execute("SELECT key, value FROM settings").fetchall())

  def images(self) -> list[dict[str, str]]:
    with self._connect() as db:
      rows = db.execute("SELECT * FROM images ORDER BY image_id").fetchall()
    return [dict(row) for row in rows]

  def image(self, image_id: str) -> dict[str, str] | None:
    with self._connect() as db:
      row = db.execute("SELECT * FROM images WHERE image_id = ?", (image_id,)).fetchone()
    return dict(row) if row else None

  def add_judgment(self, *, rater_id: str, image_id: str, answer: str,
                   response_ms: float) -> dict[str, Any]:
    """Stores one judgment in its own transaction.

    Raises:
      KeyError: unknown image.
      DuplicateJudgment: this rater already judged this image (nothing written).
    """
    with self._connect() as db:
      db.execute("BEGIN IMMEDIATE")
      try:
        row = db.execute("SELECT truth FROM images WHERE image_id = ?",
                         (image_id,)).fetchone()
        if row is None:
          raise KeyError(image_id)
        record = dict(rater_id=rater_id, image_id=image_id, truth=row["truth"],
                      answer=answer, response_ms=float(response_ms),
                      timestamp=time.time())
        db.execute("INSERT INTO judgments (rater_id, image_id, truth, answer, "
                   "response_ms, timestamp) VALUES (:rater_id, :image_id, :truth, "
                   ":answer, :response_ms, :timestamp)", record)
        db.execute("COMMIT")
        return record
      except sqlite3.IntegrityError:
        db.execute("ROLLBACK")
        raise DuplicateJudgment(image_id) from None
      except BaseException:
        db.execute("ROLLBACK")
        raise

  def judgments(self, rater_id: str | None = None) -> list[dict[str, Any]]:
    """Judgments (oldest first), each with its image's block and source."""
    query = ("SELECT j.*, i.block, i.source FROM judgments j JOIN images i "
             "USING (image_id)")
    args: tuple = ()
    if rater_id is not None:
      query, args = query + " WHERE j.rater_id = ?", (rater_id,)
    with self._connect() as db:
      return [dict(row) for row in db.execute(query + " ORDER BY judgment_id", args)]
