"""What each strategy of a comparison labeled: near-duplicates and difficulty, or objects
and classes.

    .venv/bin/python bench/selection_profile.py COMPARE_DIR DATA_META [--out NAME]
    .venv/bin/python bench/selection_profile.py COMPARE_DIR --voc-root VOCDEVKIT [--out NAME]

COMPARE_DIR is an al_compare folder (its ``*/seed*/al_state.json``). With
DATA_META, the generated set's ``mmal_meta.json``
(``data/synthetic_voc/VOCdevkit/VOC2007/mmal_meta.json`` or
``data/synthetic_mpii/mmal_meta.json``), for every strategy, over its seeds
and cycles, it reports the share of selected samples that are near-duplicates
of an easy template (random sampling's share is the pool's, about 35 %), how
many distinct templates they copy, and their mean difficulty, beside the
pool's. That is the generated data's answer to "what did the strategy spend
its labels on". With ``--voc-root``, a VOC-format pool of real images (e.g.
``data/neu_det/VOCdevkit``), the answer in objects: per strategy, the boxes
per picked image and the share of each class among the picks' objects,
beside the pool's (``--split``'s images, by default ``train``: NEU-DET's pool).
"""
import argparse
import collections
import json
import os.path as osp
import statistics
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from common import write_result


def sample_profile(meta: dict) -> dict[str, tuple[bool, float, int | None]]:
    """Sample id -> (is a near-duplicate, difficulty, template) for VOC or MPII sets."""
    out = {}
    if 'near_duplicate_of' in meta and 'difficulty' in meta:          # VOC
        dups = meta['near_duplicate_of']
        pool_size = meta['config']['num_trainval']     # ids past it are the test set
        for img_id, d in meta['difficulty'].items():
            if int(img_id) <= pool_size:
                out[f'VOC2007/JPEGImages/{img_id}'] = (img_id in dups, d, dups.get(img_id))
        return out
    for rec in meta['records']['train']:                               # MPII
        base = 'images/' + osp.splitext(rec['image'])[0]
        sample = base if rec['person'] == 0 else f'{base}#{rec["person"]}'
        t = rec.get('near_duplicate_of')
        out[sample] = (t is not None, rec['difficulty'], t)
    return out


def profile(compare_dir: Path, meta: dict) -> dict:
    lookup = sample_profile(meta)
    result = {}
    for state_path in sorted(compare_dir.glob('*/seed*/al_state.json')):
        name = state_path.parent.parent.name
        state = json.loads(state_path.read_text())
        picked = [p['id'] for c in state['cycles'] for p in c.get('selected', [])]
        entry = result.setdefault(name, dict(duplicate_share=[], templates=[], difficulty=[]))
        rows = [lookup[i] for i in picked if i in lookup]
        if not rows:
            continue
        entry['duplicate_share'].append(sum(r[0] for r in rows) / len(rows))
        entry['templates'].append(len({r[2] for r in rows if r[0]}))
        entry['difficulty'].append(statistics.mean(r[1] for r in rows))
    everything = list(lookup.values())
    summary = dict(pool=dict(duplicate_share=sum(r[0] for r in everything) / len(everything),
                             difficulty=statistics.mean(r[1] for r in everything)))
    for name, e in result.items():
        if e['duplicate_share']:
            summary[name] = dict(runs=len(e['duplicate_share']),
                                 duplicate_share=statistics.mean(e['duplicate_share']),
                                 templates=statistics.mean(e['templates']),
                                 difficulty=statistics.mean(e['difficulty']))
    return summary


def voc_objects(root: Path, sample: str) -> list[str]:
    """The class names of a VOC sample's objects (``VOC2007/JPEGImages/x`` ->
    ``VOC2007/Annotations/x.xml``)."""
    folder, _, name = sample.rpartition('/JPEGImages/')
    tree = ET.parse(root / folder / 'Annotations' / f'{name}.xml')
    return [o.findtext('name') for o in tree.findall('object')]


def object_profile(states: list[Path], root: Path, split: str) -> dict:
    """Per strategy: boxes per picked image and each class's share of the picks' objects
    (over seeds and cycles); ``pool``: the same over the images of ``split``."""
    picks = {}
    for state_path in states:
        cycles = json.loads(state_path.read_text())['cycles']
        picks.setdefault(state_path.parent.parent.name, []).extend(
            p['id'] for c in cycles for p in c.get('selected', []))
    names = (root / 'VOC2007' / 'ImageSets' / 'Main' / f'{split}.txt').read_text().split()

    def summary(ids) -> dict:
        classes = [name for i in ids for name in voc_objects(root, i)]
        counts = collections.Counter(classes)
        return dict(images=len(ids), boxes_per_image=len(classes) / max(len(ids), 1),
                    class_share={k: counts[k] / len(classes) for k in sorted(counts)})
    return dict(pool=summary([f'VOC2007/JPEGImages/{n}' for n in names]),
                **{name: summary(ids) for name, ids in picks.items()})


def print_objects(summary: dict) -> None:
    classes = sorted({k for s in summary.values() for k in s['class_share']})
    print(f'{"strategy":28s} {"images":>6s} {"boxes/img":>9s} '
          + ' '.join(f'{c[:10]:>10s}' for c in classes))
    for name, s in summary.items():
        print(f'{name:28s} {s["images"]:6d} {s["boxes_per_image"]:9.2f} '
              + ' '.join(f'{s["class_share"].get(c, 0):10.2f}' for c in classes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('compare_dir')
    parser.add_argument('meta', nargs='?', help="a generated set's mmal_meta.json")
    parser.add_argument('--voc-root', help='a VOC-format pool of real images (VOCdevkit)')
    parser.add_argument('--split', default='train',
                        help="with --voc-root: the pool's ImageSets/Main list")
    parser.add_argument('--out', help='result name (default: selection_profile_<dir name>)')
    args = parser.parse_args()
    name = args.out or f'selection_profile_{Path(args.compare_dir).name}'
    if (args.meta is None) == (args.voc_root is None):
        parser.error('give DATA_META (generated data) or --voc-root (real VOC data)')
    if args.voc_root:
        states = sorted(Path(args.compare_dir).glob('*/seed*/al_state.json'))
        if not states:
            parser.error(f'{args.compare_dir}: no */seed*/al_state.json')
        summary = object_profile(states, Path(args.voc_root), args.split)
        print_objects(summary)
        print('written:', write_result(name, dict(compare_dir=str(args.compare_dir),
                                                 voc_root=str(args.voc_root),
                                                 summary=summary)))
        return 0
    meta = json.loads(Path(args.meta).read_text())
    summary = profile(Path(args.compare_dir), meta)
    print(f'{"strategy":32s} {"runs":>4s} {"dup share":>9s} {"templates":>9s} {"difficulty":>10s}')
    for name, s in summary.items():
        print(f'{name:32s} {s.get("runs", ""):>4} {s["duplicate_share"]:9.3f} '
              f'{s.get("templates", float("nan")):9.1f} {s["difficulty"]:10.3f}')
    print('written:', write_result(name, dict(compare_dir=str(args.compare_dir),
                                             meta=str(args.meta), summary=summary)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
