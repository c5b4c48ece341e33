"""Annotation readers: one small class per published dataset layout, each returning :class:`VideoRecord` lists.

Every dataset class answers the same questions::

    ann = SSv2Annotations(root="/data/ssv2")
    ann.class_names()       # list[str]; index = class id
    ann.num_classes         # len(ann.class_names())
    ann.splits              # the splits this copy has: a subset of ("train", "val", "test")
    ann.records("train")    # list[VideoRecord]: absolute paths, unique video ids, labels in [0, K)

Constructors are keyword-only: ``root`` plus every file and folder, with the dataset's layout below ``root`` as
defaults (a relative path is taken below ``root``, an absolute one as is). Argument values are checked in the
constructor; files are read when asked for (class names once, then cached), so a config instantiates without I/O.

Errors are :class:`~rsa_lightning.errors.DataError` (:class:`~rsa_lightning.errors.MissingFileError` for a missing
file, naming ``data.root`` or the ``data.annotations`` key to check) and name the file and the line (JSON files: the
entry index, or line and column for invalid JSON) with the fix: a malformed line (with the separator it seems to use
when that is the cause), an unknown template or class name, a label outside ``[0, K)``, a video id listed twice (both
places), a class name listed twice (the name and both places), fewer than two classes, an empty split, a split the
dataset does not have (with the ones it has). Only a ``test`` split may hold ``UNLABELLED`` videos (predict-only).

Classes, one module per publisher format: :class:`SSv2Annotations` (``ssv2``), :class:`SSv1Annotations` (``ssv1``),
:class:`Diving48Annotations` (``diving48``), :class:`GymAnnotations` (``finegym``), :class:`KineticsAnnotations`
(``kinetics``) and the generic :class:`ListAnnotations` (``lists``: ``<path> <label>`` video lists, the official
RSA / TSM ``<frame_folder> <num_frames> <label>`` frame lists and mmaction2's ``<frame_folder> <start_frame>
<num_frames> <label>`` offset lists; multi-label and ambiguous lines are refused). ``common`` holds
:class:`VideoRecord`, the base class and the helpers they share.
"""

from rsa_lightning.data.annotations.common import UNLABELLED, VideoRecord
from rsa_lightning.data.annotations.diving48 import Diving48Annotations
from rsa_lightning.data.annotations.finegym import GymAnnotations
from rsa_lightning.data.annotations.kinetics import KineticsAnnotations
from rsa_lightning.data.annotations.lists import ListAnnotations, read_class_names, read_video_list
from rsa_lightning.data.annotations.ssv1 import SSv1Annotations
from rsa_lightning.data.annotations.ssv2 import SSv2Annotations

__all__ = [
    "UNLABELLED",
    "Diving48Annotations",
    "GymAnnotations",
    "KineticsAnnotations",
    "ListAnnotations",
    "SSv1Annotations",
    "SSv2Annotations",
    "VideoRecord",
    "read_class_names",
    "read_video_list",
]
