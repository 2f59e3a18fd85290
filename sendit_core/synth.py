"""Synthetic DICOM series, written slice by slice with pydicom, for tests and benchmarks.

Each file is a CT-like image with about 80 realistic header elements (patient,
study, series, equipment, geometry, pixel module and a small nested sequence).
The pixel values form a phantom: a body ellipse of soft tissue with a bright
marker sphere at a known patient-space point, so a viewer's geometry can be
checked.
"""
from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

_ROOT = "1.2.826.0.1.3680043.10.1234."  # a private-looking root for generated UIDs


@dataclass
class SeriesSpec:
    """What to generate: ``slices`` images of ``rows`` x ``columns`` pixels."""

    slices: int = 10
    rows: int = 64
    columns: int = 64
    pixel_spacing: tuple[float, float] = (0.7, 0.7)
    slice_spacing: float = 2.5
    origin: tuple[float, float, float] = (-120.0, -140.0, 50.0)
    #: a bright marker sphere at this patient-space point (mm), or None
    marker: tuple[float, float, float] | None = None
    marker_radius: float = 4.0
    patient_id: str = "SYN0001"
    patient_name: str = "SYNTHETIC^PATIENT"
    study_uid: str | None = None
    series_uid: str | None = None
    series_number: int = 1
    study_date: str = "20240115"


def new_uid() -> str:
    """A random UID short enough (52 characters) to take a ``.n`` suffix."""
    return _ROOT + str(uuid.uuid4().int)[:24]


def _phantom_slice(spec: SeriesSpec, z: float, rng: np.random.Generator) -> np.ndarray:
    """HU values of one axial slice at height ``z`` (row = y, column = x)."""
    ys = spec.origin[1] + np.arange(spec.rows)[:, None] * spec.pixel_spacing[0]
    xs = spec.origin[0] + np.arange(spec.columns)[None, :] * spec.pixel_spacing[1]
    cx = spec.origin[0] + spec.columns * spec.pixel_spacing[1] / 2
    cy = spec.origin[1] + spec.rows * spec.pixel_spacing[0] / 2
    ax, ay = spec.columns * spec.pixel_spacing[1] * 0.4, spec.rows * spec.pixel_spacing[0] * 0.3
    body = ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 <= 1.0
    hu = np.where(body, 40, -1000).astype(np.int16)
    hu += rng.integers(-8, 9, size=hu.shape, dtype=np.int16)
    if spec.marker is not None:
        mx, my, mz = spec.marker
        inside = (xs - mx) ** 2 + (ys - my) ** 2 + (z - mz) ** 2 <= spec.marker_radius ** 2
        hu[inside] = 2000
    return hu


def _base_dataset(spec: SeriesSpec, study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = spec.study_date
    ds.StudyTime = "101500.000000"
    ds.SeriesTime = "101612.000000"
    ds.AcquisitionTime = ds.ContentTime = "101613.250000"
    ds.AccessionNumber = "ACC" + spec.patient_id[-4:]
    ds.Modality = "CT"
    ds.Manufacturer = "SYNTHETIC"
    ds.InstitutionName = "Research Imaging Center"
    ds.ReferringPhysicianName = "REFERRER^DOC"
    ds.StationName = "CTSIM01"
    ds.StudyDescription = "CHEST ABDOMEN PELVIS"
    ds.SeriesDescription = f"AXIAL {spec.slice_spacing} mm"
    ds.ManufacturerModelName = "Phantom 3000"
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.PatientAge = "054Y"
    ds.PatientWeight = "72.5"
    ds.BodyPartExamined = "CHEST"
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = str(spec.slice_spacing)
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500.0"
    ds.SoftwareVersions = "sendit-synth 1.0"
    ds.ReconstructionDiameter = f"{spec.columns * spec.pixel_spacing[1]:.1f}"
    ds.DistanceSourceToDetector = "1085.6"
    ds.DistanceSourceToPatient = "595.0"
    ds.GantryDetectorTilt = "0.0"
    ds.TableHeight = "160.0"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "250"
    ds.Exposure = "125"
    ds.FilterType = "BODY FILTER"
    ds.GeneratorPower = "30000"
    ds.FocalSpots = "1.2"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.RevolutionTime = 0.5
    ds.SingleCollimationWidth = 0.625
    ds.TotalCollimationWidth = 40.0
    ds.SpiralPitchFactor = 0.984375
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = spec.series_number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.PositionReferenceIndicator = "SN"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.PixelSpacing = list(spec.pixel_spacing)
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = ["40", "400"]
    ds.WindowWidth = ["400", "1500"]
    ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "BONE"]
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.LossyImageCompression = "00"
    code = Dataset()
    code.CodeValue = "T-D3000"
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([code])
    procedure = Dataset()
    procedure.CodeValue = "CTCAP"
    procedure.CodingSchemeDesignator = "LOCAL"
    procedure.CodeMeaning = "CT chest abdomen pelvis"
    ds.ProcedureCodeSequence = Sequence([procedure])
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = study_uid + ".77"
    ds.ReferencedStudySequence = Sequence([ref])
    ds.add_new(0x00090010, "LO", "SENDIT_SYNTH")  # private creator of block 0x10
    ds.add_new(0x00091001, "DS", "3.14")
    ds.add_new(0x00091002, "LO", "SYNTH PRIVATE")
    return ds


def write_series(folder: Path, spec: SeriesSpec, *, seed: int = 0, shuffle: bool = False) -> list[Path]:
    """Write one series as ``<folder>/<n>.dcm`` files; returns the paths in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid = spec.study_uid or new_uid()
    series_uid = spec.series_uid or new_uid()
    base = _base_dataset(spec, study_uid, series_uid)
    order = list(range(spec.slices))
    names = order[:]
    if shuffle:
        rng.shuffle(names)
    paths = []
    for index, name in zip(order, names):
        z = spec.origin[2] + index * spec.slice_spacing
        ds = base.copy()
        ds.SOPInstanceUID = series_uid + f".{index + 1}"
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [spec.origin[0], spec.origin[1], z]
        ds.SliceLocation = f"{z:.2f}"
        ds.PixelData = _phantom_slice(spec, z, rng).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = folder / f"{name:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_corpus(folder: Path, files: int, series: int, rows: int = 64, columns: int = 64,
                 seed: int = 0) -> Iterator[Path]:
    """Write ``files`` images spread over ``series`` series (and a few patients)."""
    per_series = -(-files // series)
    written = 0
    for number in itertools.count(1):
        if written >= files:
            return
        count = min(per_series, files - written)
        spec = SeriesSpec(slices=count, rows=rows, columns=columns, series_number=number,
                          patient_id=f"SYN{(number - 1) % 4:04d}",
                          patient_name=f"SYNTHETIC^PATIENT{(number - 1) % 4}",
                          study_date=f"2024{1 + (number % 12):02d}{1 + (number % 27):02d}")
        yield from write_series(folder / f"series{number:03d}", spec, seed=seed + number)
        written += count
