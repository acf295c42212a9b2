"""Project commands on core only (no torch): new, add, import-labels, export, info; open and demo
start the desktop app, importing Qt only then."""

from __future__ import annotations

import json
from pathlib import Path

from segdesk.cli.common import EXIT_ERROR, EXIT_OK, fail, open_project, print_err
from segdesk.core import encoding, exchange
from segdesk.core.errors import SegdeskError
from segdesk.core.project import (DEFAULT_COLOURS, STATUS_ACCEPTED, STATUS_IN_PROGRESS, STATUS_NEW,
                                  STATUSES, LabelClass, Project)


def _parse_classes(text: str) -> list[LabelClass]:
    """'lung,heart' or 'lung:#ff0000,heart' -> classes, default colours where none is given."""
    classes = []
    for i, item in enumerate(text.split(",")):
        name, _, colour = item.partition(":")
        name = name.strip()
        if not name:
            raise fail(f"empty class name in {text!r}; give names separated by commas, e.g. lung,heart")
        classes.append(LabelClass(name, colour.strip() or DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)]))
    return classes


def cmd_new(args) -> int:
    project = Project.create(args.project, _parse_classes(args.classes))
    print(f"created project {project.name} at {project.root} with classes "
          + ", ".join(c.name for c in project.classes))
    return EXIT_OK


# core.project's reason for a file whose image the project already holds: not an error, so that adding
# a folder again (after putting new files in it) succeeds and adds only the new ones
_DUPLICATE = "already in the project"


def cmd_add(args) -> int:
    """Exit 1 when nothing was added and something given could not be: a file unreadable or missing,
    a folder without images. Skipped duplicates are counted, not reported (``-v`` lists them)."""
    project = open_project(args.project)
    report = project.add_images(args.paths)
    failed = [(path, reason) for path, reason in report.skipped if reason != _DUPLICATE]
    for path, reason in failed:
        print_err(f"skipped {path}: {reason}")
    empty = report.empty_folders
    for folder in empty:
        print_err(f"no images found in {folder}")
    n, duplicates = len(report.added), len(report.skipped) - len(failed)
    print(f"added {n} image{'s' if n != 1 else ''}"
          + (f", {duplicates} already in the project" if duplicates else "")
          + (f", skipped {len(failed)}" if failed else ""))
    return EXIT_ERROR if not report.added and (failed or empty) else EXIT_OK


def cmd_import_labels(args) -> int:
    project = open_project(args.project)
    masks = exchange.list_masks(args.mask_dir)
    if not masks:
        raise fail(f"no PNG masks in {args.mask_dir}")
    match = exchange.match_masks(masks, project.images)
    skipped = list(match.skipped)
    imported = unchanged = invalid = 0
    for path, entry in match.matched:
        try:
            mask = exchange.read_mask(path, entry.shape, project.n_classes)
        except SegdeskError as exc:
            skipped.append((path, str(exc)))
            invalid += 1
            continue
        label = encoding.mask_to_label(mask)
        if entry.status != STATUS_NEW and not args.overwrite:
            current = project.read_label(entry.id) if entry.status == STATUS_ACCEPTED else None
            if current is not None and (current == label).all():
                unchanged += 1
            else:
                skipped.append((path, f"image {entry.id} is already {entry.status}; "
                                      "--overwrite replaces its label"))
            continue
        project.accept(entry.id, label)
        imported += 1
    for path, reason in skipped:
        print_err(f"skipped {path}: {reason}")
    parts = [f"imported {imported} mask{'s' if imported != 1 else ''} as accepted labels"]
    if unchanged:
        parts.append(f"{unchanged} unchanged")
    if skipped:
        parts.append(f"skipped {len(skipped)}")
    print(", ".join(parts))
    # a mask that matches an image but does not fit it is bad input: the others are imported, but fail
    return EXIT_ERROR if invalid else EXIT_OK


def cmd_export(args) -> int:
    """Exit 1 when any wanted image or series was skipped; the others are written all the same."""
    project = open_project(args.project, clean=False)  # a reader: no lock, no clean-up
    out = exchange.prepare_out_dir(args.out)
    names = exchange.export_names(project.images)
    wanted = {STATUS_ACCEPTED} | ({STATUS_IN_PROGRESS} if args.include_in_progress else set())
    if args.format != "png":
        return _export_volumes(project, out, wanted, args)
    count = skipped = 0
    for entry in project.images:
        if entry.status not in wanted:
            continue
        try:  # a missing or damaged label file skips its image; the others are still exported
            label = project.read_label(entry.id)
            if label is None:
                raise fail("its label file is missing")
        except SegdeskError as exc:
            print_err(f"skipped {entry.id}: {exc}")
            skipped += 1
            continue
        exchange.write_mask(out / names[entry.id], encoding.label_to_mask(label))
        count += 1
    print(f"exported {count} mask{'s' if count != 1 else ''} to {out} "
          f"(0 = background, " + ", ".join(f"{encoding.class_number(i)} = {c.name}" for i, c in enumerate(project.classes))
          + ")")
    return EXIT_ERROR if skipped else EXIT_OK


def _export_volumes(project: Project, out: Path, wanted: set[str], args) -> int:
    """DICOM SEG or NIfTI: one file per DICOM series (see segdesk.core.export_dicom_seg/_nifti)."""
    if args.format == "dicom-seg":
        from segdesk.core.export_dicom_seg import export_dicom_seg

        report = export_dicom_seg(project, out, wanted, keep_patient_data=args.keep_patient_data)
    else:
        from segdesk.core.export_nifti import export_nifti

        report = export_nifti(project, out, wanted)
    for what, reason in report.skipped:
        print_err(f"skipped {what}: {reason}")
    for note in report.notes:
        print_err(f"note: {note}")
    n = len(report.written)
    print(f"exported {n} {args.format} file{'s' if n != 1 else ''} to {out} (0 = background, "
          + ", ".join(f"{encoding.class_number(i)} = {c.name}" for i, c in enumerate(project.classes)) + ")")
    return EXIT_ERROR if report.skipped else EXIT_OK


def cmd_info(args) -> int:
    project = open_project(args.project, clean=False)  # a reader: no lock, no clean-up
    from segdesk.ml.checkpoints import CheckpointStore
    from segdesk.ml.pretrain import saved_steps

    store = CheckpointStore(project.root / "models")
    counts = {s: 0 for s in STATUSES}
    for e in project.images:
        counts[e.status] += 1
    info = {
        "name": project.name,
        "root": str(project.root),
        "classes": [{"name": c.name, "colour": c.color, "value": encoding.class_number(i)}
                    for i, c in enumerate(project.classes)],
        "images": [{"id": e.id, "source": e.source, "status": e.status,
                    "size": {"width": e.width, "height": e.height}} for e in project.images],
        "counts": counts,
        "checkpoints": store.list(),
        "current_model": store.current_id(),
        "pretrained_steps": saved_steps(project.root / "models"),  # segdesk pretrain; None: none
    }
    print(json.dumps(info, indent=2))
    return EXIT_OK


def cmd_open(args) -> int:
    try:
        from segdesk.app import run_app
    except ImportError as exc:  # a build without the desktop app (or without Qt)
        raise fail(f"the desktop app is not available: {exc}") from exc
    return run_app(args.project)


def cmd_demo(args) -> int:
    from segdesk import demo

    if args.no_gui:
        print(demo.create(args.into))
        return EXIT_OK
    try:
        return demo.run_gui(args.into)
    except ImportError as exc:  # a build without the desktop app (or without Qt)
        raise fail(f"the desktop app is not available: {exc}; use segdesk demo --no-gui") from exc
