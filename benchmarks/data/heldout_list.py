"""Write ``encoder/pretrain/heldout.json``: what ``musicidx pretrain`` must never learn from; or
check that the shipped list still matches the plans it was written from.

    python -m benchmarks.data.heldout_list --lieder DIR            # write it; DIR: a copy of OpenScore Lieder
    python -m benchmarks.data.heldout_list --check [--lieder DIR]  # exit 1, naming the keys, if it differs

It runs the plans of the two cross-corpus evaluation sets -- ``data.export_music21`` with its
defaults and ``data.export_lieder`` -- and records every piece they evaluate on, the composers they
count as new, and the music21 pieces that are works of the training folder (``--train-dir``). The
pretraining refuses a corpus that includes any of them; ``tests/test_pretrain.py`` runs ``--check``
(the music21 half; the Lieder half too with ``$MUSICIDX_LIEDER``). ``../shared/data/test`` and
``blind`` are unlabelled and never read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.data import export_lieder, export_music21
from benchmarks.paths import REPO, TRAINING_CORPUS, add_corpus_argument

OUT = REPO / "encoder" / "pretrain" / "heldout.json"

#: Word for word what the shipped file says, script paths of the day included: the shipped weights'
#: cards record the sha256 of the whole list, so rewriting an unchanged plan must give the same bytes.
ABOUT = (
    "Pieces and composers musicidx pretrain never learns from: every piece of the two cross-corpus "
    "evaluation sets (benchmarks/export_music21.py with its defaults; benchmarks/export_lieder.py), "
    "the music21 pieces that are works of the training folder, and the composers those sets count as "
    "new (never a labelled class; the Lieder ones never heard at all). Written by benchmarks/heldout_list.py."
)


def music21_part(train_dir: Path = TRAINING_CORPUS) -> dict[str, object]:
    """The music21 set's entries of the list (its plan with the defaults)."""
    m21_pieces, overlap = export_music21.plan(train_dir=train_dir)
    return {
        "music21_eval": sorted(p["source"] for p in m21_pieces),
        "music21_training_works": sorted(o["source"] for o in overlap),
        "music21_new_composers": sorted(export_music21.NEW),
        "music21_new_composer_dirs": sorted(export_music21.NEW.values()),
    }


def heldout(lieder: Path, train_dir: Path = TRAINING_CORPUS) -> dict[str, object]:
    """The whole list, as ``heldout.json`` holds it."""
    lp = export_lieder.plan(lieder)
    return {
        "about": ABOUT,
        **music21_part(train_dir),
        "lieder_eval": sorted(p["source"] for p in lp["pieces"]),
        "lieder_new_composer_folders": lp["new_composer_folders"],
        "lieder_new_composers": lp["new_composers"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lieder", type=Path, help="a copy of OpenScore Lieder (needed to write)")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    ap.add_argument("--out", type=Path, default=OUT)
    add_corpus_argument(ap, flag="--train-dir", what=": the training folder whose works are held out")
    a = ap.parse_args()
    if a.check:
        shipped = json.loads(a.out.read_text())
        planned = heldout(a.lieder, a.train_dir) if a.lieder else music21_part(a.train_dir)
        differ = sorted(k for k, v in planned.items() if shipped.get(k) != v)
        if differ:
            sys.exit(f"{a.out} differs from the plans in {', '.join(differ)}; rewrite it with --lieder")
        print(f"{a.out} matches the plans ({'both sets' if a.lieder else 'the music21 set; no --lieder'})")
        return
    if a.lieder is None:
        ap.error("writing the list needs --lieder")
    body = heldout(a.lieder, a.train_dir)
    a.out.write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n")
    print(
        f"{a.out}: {len(body['music21_eval'])} music21 and {len(body['lieder_eval'])} Lieder evaluation pieces, "
        f"{len(body['music21_training_works'])} training-folder works, "
        f"{len(body['music21_new_composers']) + len(body['lieder_new_composers'])} new composers"
    )


if __name__ == "__main__":
    main()
