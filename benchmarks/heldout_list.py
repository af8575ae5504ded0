"""Write ``encoder/pretrain/heldout.json``: what ``musicidx pretrain`` must never learn from.

    python benchmarks/heldout_list.py --lieder DIR        # DIR: a copy of OpenScore Lieder

It runs the plans of the two cross-corpus evaluation sets -- ``export_music21.py`` with its
defaults and ``export_lieder.py`` -- and records every piece they evaluate on, the composers they
count as new, and the music21 pieces that are works of the training folder. The pretraining
refuses a corpus that includes any of them, and ``tests/test_pretrain.py`` checks the file still
matches both plans. ``../shared/data/test`` and ``blind`` are unlabelled and never read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import export_lieder
import export_music21

OUT = Path(__file__).resolve().parent.parent / "encoder" / "pretrain" / "heldout.json"


def heldout(lieder: Path) -> dict[str, object]:
    args = argparse.Namespace(per_composer=25, chorales=60, train_dir=export_music21.TRAIN)
    m21_pieces, overlap = export_music21.plan(args)
    lp = export_lieder.plan(lieder)
    return {
        "about": (
            "Pieces and composers musicidx pretrain never learns from: every piece of the two cross-corpus "
            "evaluation sets (benchmarks/export_music21.py with its defaults; benchmarks/export_lieder.py), "
            "the music21 pieces that are works of the training folder, and the composers those sets count as "
            "new (never a labelled class; the Lieder ones never heard at all). Written by benchmarks/heldout_list.py."
        ),
        "music21_eval": sorted(p["source"] for p in m21_pieces),
        "music21_training_works": sorted(o["source"] for o in overlap),
        "music21_new_composers": sorted(export_music21.NEW),
        "music21_new_composer_dirs": sorted(export_music21.NEW.values()),
        "lieder_eval": sorted(p["source"] for p in lp["pieces"]),
        "lieder_new_composer_folders": lp["new_composer_folders"],
        "lieder_new_composers": lp["new_composers"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lieder", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    body = heldout(a.lieder)
    a.out.write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n")
    print(
        f"{a.out}: {len(body['music21_eval'])} music21 and {len(body['lieder_eval'])} Lieder evaluation pieces, "
        f"{len(body['music21_training_works'])} training-folder works, "
        f"{len(body['music21_new_composers']) + len(body['lieder_new_composers'])} new composers"
    )


if __name__ == "__main__":
    main()
