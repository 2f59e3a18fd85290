"""A CT-like phantom defined in patient space, written as a series in any orientation.

For the viewer's tests, screenshots and documentation: the same object (a
body with lungs, heart, liver, aorta, spine and an optional bright marker
sphere at a known point) can be sampled by axial, coronal, sagittal or oblique
slices, so a test can check that every acquisition lands in the same place on
the screen. Coordinates are DICOM patient coordinates in mm (LPS: x to the
patient's left, y to the back, z to the head). Stored values are HU + 1024
with Rescale Intercept -1024, as scanners write them.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

_ROOT = "1.2.826.0.1.3680043.10.1235."

#: (centre, radii, HU) ellipsoids drawn in order over the body; a radius of
#: ``inf`` makes a cylinder along that axis.
ORGANS = (
    ((62.0, -5.0, 40.0), (48.0, 62.0, 95.0), -830),     # left lung
    ((-62.0, -5.0, 40.0), (50.0, 64.0, 95.0), -830),    # right lung
    ((12.0, -38.0, -5.0), (46.0, 40.0, 42.0), 45),      # heart
    ((-58.0, -8.0, -100.0), (78.0, 70.0, 62.0), 62),    # liver (patient's right)
    ((8.0, 28.0, 0.0), (12.0, 12.0, np.inf), 190),      # aorta
    ((0.0, 62.0, 0.0), (19.0, 17.0, np.inf), 680),      # vertebral bodies
    ((0.0, 86.0, 0.0), (7.0, 7.0, np.inf), 25),         # spinal canal
)


def new_uid() -> str:
    return _ROOT + str(uuid.uuid4().int)[:24]


def hounsfield(x: np.ndarray, y: np.ndarray, z: np.ndarray, *, marker=None, marker_radius: float = 4.0,
               anatomy: bool = True, rng: np.random.Generator | None = None) -> np.ndarray:
    """HU at patient points (arrays of the same shape)."""
    outer = (x / 150.0) ** 2 + (y / 110.0) ** 2 <= 1.0
    inner = (x / 140.0) ** 2 + (y / 100.0) ** 2 <= 1.0
    hu = np.full(x.shape, -1000, dtype=np.int16)
    hu[outer] = -90
    hu[inner] = 40
    if anatomy:
        for centre, radii, value in ORGANS:
            inside = sum(((c - m) / r) ** 2 for c, m, r in zip((x, y, z), centre, radii) if np.isfinite(r)) <= 1.0
            hu[inside & inner] = value
    if rng is not None:
        hu = hu + rng.integers(-8, 9, size=hu.shape, dtype=np.int16)
    if marker is not None:
        mx, my, mz = marker
        hu[(x - mx) ** 2 + (y - my) ** 2 + (z - mz) ** 2 <= marker_radius ** 2] = 2000
    return hu


def write_phantom_series(folder: Path, *, rows: int = 64, columns: int = 64, slices: int = 32,
                         pixel_spacing: tuple[float, float] = (1.0, 1.0), slice_spacing: float = 2.0,
                         orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
                         centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
                         marker: tuple[float, float, float] | None = None, marker_radius: float = 4.0,
                         anatomy: bool = True, shuffle: bool = False, seed: int = 0,
                         series_uid: str | None = None, study_uid: str | None = None,
                         description: str = "PHANTOM") -> list[Path]:
    """Write the phantom as ``slices`` images centred on ``centre``; returns the
    paths in slice order (along the normal). File names are shuffled on request."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    row = np.array(orientation[:3], float)
    col = np.array(orientation[3:], float)
    normal = np.cross(row, col)
    sr, sc = pixel_spacing
    origin = (np.array(centre, float) - (columns - 1) / 2 * sc * row - (rows - 1) / 2 * sr * col
              - (slices - 1) / 2 * slice_spacing * normal)
    study_uid = study_uid or new_uid()
    series_uid = series_uid or new_uid()
    jj, ii = np.mgrid[0:rows, 0:columns]
    names = list(range(slices))
    if shuffle:
        rng.shuffle(names)
    paths = []
    for k in range(slices):
        corner = origin + k * slice_spacing * normal
        points = corner[:, None, None] + ii[None] * sc * row[:, None, None] + jj[None] * sr * col[:, None, None]
        hu = hounsfield(points[0], points[1], points[2], marker=marker, marker_radius=marker_radius,
                        anatomy=anatomy, rng=rng)
        ds = _dataset(study_uid, series_uid, k, rows, columns, pixel_spacing, slice_spacing, orientation,
                      corner, description)
        ds.PixelData = (hu.astype(np.int32) + 1024).astype(np.int16).tobytes()
        path = folder / f"{names[k]:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _dataset(study_uid, series_uid, k, rows, columns, pixel_spacing, slice_spacing, orientation, corner,
             description) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{series_uid}.{k + 1}"
    ds.StudyDate = ds.SeriesDate = "20240301"
    ds.StudyTime = "093000"
    ds.Modality = "CT"
    ds.Manufacturer = "SENDIT PHANTOM"
    ds.StudyDescription = "VIEWER PHANTOM"
    ds.SeriesDescription = description
    ds.PatientName = "PHANTOM^VIEWER"
    ds.PatientID = "PHANTOM01"
    ds.PatientSex = "O"
    ds.PatientPosition = "HFS"
    ds.SliceThickness = f"{slice_spacing:g}"
    ds.KVP = "120"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [f"{v:.4f}" for v in corner]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = ["40", "-600", "400"]
    ds.WindowWidth = ["400", "1500", "1800"]
    ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG", "BONE"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    code = Dataset()
    code.CodeValue = "T-D3000"
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([code])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds
