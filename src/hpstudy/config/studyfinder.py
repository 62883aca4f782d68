"""Finding a study file: a path as given, or a bare name among the known studies.

    >>> resolve_path("paper")              # STUDIES_DIR / "paper.toml" (or $HPSTUDY_STUDIES_DIR's)
    >>> resolve_path("studies/grid.toml")  # a path: it holds a '/' or ends in '.toml'
    >>> known_studies()                    # ['cnn', 'digits', 'grid', 'paper', ...]

A bare name is looked up in `$HPSTUDY_STUDIES_DIR`, then among the studies shipped inside the
package (`hpstudy/studies/`, package data linked as `studies/` at the top of a checkout), never in
the current folder, so `cd runs && hpstudy run replicate` finds the study, not the run folder.
Which file a name means is this module's question; what the file says is
`hpstudy.config.studyfile`'s, which reads the file this module finds.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from hpstudy.config.paths import os_errors, user_path
from hpstudy.config.study import SLUG
from hpstudy.errors import UserError

STUDIES_DIR = Path(str(importlib.resources.files("hpstudy") / "studies"))


def resolve_path(name_or_path: str | os.PathLike) -> Path:
    """A study file path from a path or a bare name such as 'paper'. An argument is a path when
    it holds a '/' or ends in '.toml'; anything else is a study name, whatever the current
    folder holds (`cd runs && hpstudy run replicate` finds the shipped study, not the run
    folder `replicate`)."""
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or "/" in text or os.sep in text or \
            text.endswith(".toml"):  # fmt: skip
        path = user_path(text, "study file")
        with os_errors(path, "study file", fix="give a path to a .toml file"):
            if path.is_file():
                return path
        raise UserError(f"study file {text!r} not found; give a path to a .toml file or one of "
                        f"the studies {', '.join(known_studies()) or '(none)'}")  # fmt: skip
    if SLUG.fullmatch(text):  # a study name is a slug: anything else (a NUL, say) names none
        for folder in _study_folders():
            if (folder / f"{text}.toml").is_file():
                return folder / f"{text}.toml"
    raise UserError(
        f"no study named {text!r}; known studies: {', '.join(known_studies()) or '(none)'}; or "
        f"give a path to a .toml file (./{text}.toml)"
    )


def _study_folders() -> list[Path]:
    """Where a bare study name is looked up: $HPSTUDY_STUDIES_DIR, then the shipped studies."""
    return [Path(d) for d in [os.environ.get("HPSTUDY_STUDIES_DIR")] if d] + [STUDIES_DIR]


def known_studies() -> list[str]:
    """Every study name `resolve_path` finds, sorted."""
    return sorted({p.stem for f in _study_folders() if f.is_dir() for p in f.glob("*.toml")})
