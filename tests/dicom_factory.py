"""Small synthetic DICOM files for tests and screenshots, built with pydicom (no real patient data).

Every file carries the same distinctive fake identifiers, so a test can check that none of them
leaks into project.json, exports, file names or logs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage,
                         generate_uid)

PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "PID-12345"
BIRTH_DATE = "19230405"
ACCESSION = "ACC-998877"
INSTITUTION = "St Elsewhere Hospital"
IDENTIFIERS = (PATIENT_NAME, "DOE", "JANE", PATIENT_ID, BIRTH_DATE, ACCESSION, INSTITUTION)


def ct_phantom(size: int = 64, seed: int = 0) -> np.ndarray:
    """int16 Hounsfield units: air around a soft-tissue body with lungs and a bone ring."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    hu = np.full((size, size), -1000.0)
    body = (xx / 0.45) ** 2 + (yy / 0.38) ** 2 < 1
    hu[body] = 40
    for cx in (-0.18, 0.18):
        hu[((xx - cx) / 0.12) ** 2 + (yy / 0.22) ** 2 < 1] = -800
    ring = np.abs(np.hypot(xx / 0.45, yy / 0.38) - 0.93) < 0.04
    hu[ring] = 900
    hu[np.hypot(xx, yy + 0.05) < 0.05] = 300  # a contrast-filled vessel
    hu += rng.normal(0, 12, hu.shape)
    return np.rint(hu).astype(np.int16)


def dataset(pixels: np.ndarray, *, photometric: str = "MONOCHROME2", modality: str = "CT",
            bits_stored: int | None = None, series_uid: str | None = None, study_uid: str | None = None,
            instance: int = 1, position: tuple[float, float, float] | None = (0.0, 0.0, 0.0),
            spacing: tuple[float, float] = (0.7, 0.8), n_frames: int | None = None,
            slope: float | None = None, intercept: float | None = None,
            window: tuple[list[float], list[float]] | None = None,
            series_description: str = "Chest 1.0 B30f") -> Dataset:
    """A complete image dataset around ``pixels`` (stored values), with fake patient identifiers."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage if modality == "CT" else SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    ds.AccessionNumber = ACCESSION
    ds.InstitutionName = INSTITUTION
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240102", "101500", "S77"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = 3
    ds.SeriesDescription = series_description
    ds.Modality = modality
    ds.InstanceNumber = instance
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[ds.SeriesInstanceUID, "frame of reference"])
    if position is not None:
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = 1.0
    if n_frames is not None:
        ds.NumberOfFrames = n_frames
    bits = bits_stored or pixels.dtype.itemsize * 8
    ds.set_pixel_data(pixels, photometric, bits)  # also gives a new SOP Instance UID
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0
        ds.RescaleType = "HU"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    return ds


def write(path: Path, ds: Dataset, *, preamble: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=preamble)
    return path


def ct_file(path: Path, hu: np.ndarray | None = None, **kw) -> Path:
    """A CT slice stored the usual way: unsigned 12-bit values with intercept -1024."""
    hu = ct_phantom() if hu is None else hu
    stored = (hu.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
    kw.setdefault("window", ([40.0, -600.0], [400.0, 1500.0]))
    return write(path, dataset(stored, bits_stored=12, slope=1.0, intercept=-1024.0, **kw))


def minimal_dataset(pixels: np.ndarray, *, series_uid: str, study_uid: str,
                    position: tuple[float, float, float] | None = None,
                    frame_uid: str | None = None) -> Dataset:
    """Only the type 1 attributes of a CT image (``position`` given) or of a secondary capture
    (no position): no patient, study date, series number, instance number or slice thickness,
    as anonymisers often leave files. Stored values are ``pixels`` (uint16, no rescale)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    if position is not None:
        ds.SOPClassUID, ds.Modality = CTImageStorage, "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = frame_uid or generate_uid()
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.8]
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    else:
        ds.SOPClassUID, ds.Modality, ds.ConversionType = SecondaryCaptureImageStorage, "OT", "WSD"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.set_pixel_data(pixels.astype(np.uint16), "MONOCHROME2", 12)  # also the SOP Instance UID
    return ds
