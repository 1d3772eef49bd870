"""GenICamCamera against real GenTL producers.

- TLSimu.cti from the genicam==1.5.0 wheel (scripts/fetch_test_assets.py caches it; or set
  AFRD_TEST_CTI): 4 devices, models TLSimuMono/TLSimuColor, serials SN_Interface{A,B}_{0,1},
  all user-named "Center"; software trigger; no ExposureTime/Gain; TriggerSource only "Software".
  Its PixelFormat node accepts Bayer/RGB/Mono names but the stream always carries Mono8 (Mono
  model) or RGB8 (Color model), so Bayer demosaicing is covered by tests/test_genicam_convert.py.
- viky.cti from genicam 1.6: 3 free-running devices (serials 0/1/2 = red/green/blue ball on
  white), no trigger nodes, PixelFormat RGBa8 or Mono8, width/height >= 100.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from afrd.acquire.genicam import GenICamCamera, GenICamConfig
from afrd.errors import DeviceError, FrameTimeout

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "genicam" / "1.5.0"


def camera(
    producer: str | None = None,
    *,
    trigger: str = "software",
    reopen_backoff_s: tuple[float, float] = (0.5, 30.0),
    **config,
) -> GenICamCamera:
    """The driver on its own config object (what a cell config's [camera] section holds)."""
    return GenICamCamera(
        GenICamConfig(producer=producer, **config),
        trigger=trigger,
        reopen_backoff_s=reopen_backoff_s,
    )


def tlsimu_cti() -> str:
    """Path of TLSimu.cti, or skip saying why it is not there."""
    env = os.environ.get("AFRD_TEST_CTI")
    if env:
        if not Path(env).is_file():
            pytest.skip(f"AFRD_TEST_CTI={env} does not exist")
        return env
    path = CACHE / "TLSimu.cti"
    if path.is_file() and (CACHE / "libVirtualFG.so").is_file():
        return str(path)
    error = CACHE.parent / "1.5.0.error"
    why = error.read_text().strip() if error.is_file() else "not fetched yet"
    pytest.skip(f"TLSimu.cti not in {CACHE} ({why}); run scripts/fetch_test_assets.py")


def viky_cti() -> str:
    try:
        import genicam
    except ImportError as exc:
        pytest.skip(f"genicam not importable: {exc}")
    path = Path(genicam.__file__).resolve().parent / "viky.cti"
    if not path.is_file():
        pytest.skip(f"no viky.cti in genicam {getattr(genicam, '__version__', '?')} ({path})")
    return str(path)


@pytest.fixture
def mono() -> GenICamCamera:
    cam = camera(
        tlsimu_cti(),
        serial="SN_InterfaceA_0",
        pixel_format="Mono8",
        width=64,
        height=48,
        trigger="software",
        timeout_s=2.0,
    )
    cam.open()
    yield cam
    cam.close()


def test_software_trigger_mono8(mono: GenICamCamera) -> None:
    assert mono.has_trigger and mono.name == "TLSimuMono SN_InterfaceA_0"
    frames = []
    for _ in range(3):
        mono.trigger()
        img = mono.grab(2.0)
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
        assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
        frames.append(img[..., 0].astype(int))
    assert mono.last_pixel_format == "Mono8"
    # TLSimu's mono test pattern is a diagonal ramp that moves by one per frame:
    # one new frame per trigger, none dropped or repeated.
    assert (np.diff(frames[0], axis=1) == 1).all() and (np.diff(frames[0], axis=0) == 1).all()
    assert all((b - a == 1).all() for a, b in zip(frames, frames[1:], strict=False))


def test_fetch_timeout_without_trigger_is_quick_device_error(mono: GenICamCamera) -> None:
    t0 = time.monotonic()
    with pytest.raises(FrameTimeout, match=r"TLSimuMono SN_InterfaceA_0: no frame within"):
        mono.grab(0.3)
    assert time.monotonic() - t0 < 1.5
    assert mono.lost is None  # a timeout is not a lost device
    mono.trigger()
    assert mono.grab(2.0).shape == (48, 64, 3)


def test_colour_device_asked_for_bayer_converts_what_the_buffer_says() -> None:
    with camera(
        tlsimu_cti(), serial="SN_InterfaceB_1", pixel_format="BayerRG8", width=64, height=32
    ) as cam:
        assert cam.name == "TLSimuColor SN_InterfaceB_1"
        cam.trigger()
        img = cam.grab(2.0)
    assert img.shape == (32, 64, 3) and img.dtype == np.uint8
    assert cam.last_pixel_format == "RGB8"  # TLSimu ignores PixelFormat for its stream
    assert img.std() > 0


def test_unknown_features_are_skipped_and_bad_values_refused() -> None:
    cti = tlsimu_cti()
    with camera(cti, serial="SN_InterfaceA_0", exposure_us=500, gain=2.0) as cam:
        assert cam.skipped == ["ExposureTime", "Gain"]
        with pytest.raises(
            DeviceError, match="TLSimuMono SN_InterfaceA_0: device has no ExposureTime"
        ):
            cam.set_exposure(800)
    with pytest.raises(DeviceError, match=r"PixelFormat='Mono9' not available.*'Mono8'"):
        camera(cti, serial="SN_InterfaceA_0", pixel_format="Mono9").open()
    # TLSimu's TriggerSource offers only Software: the hardware mode names what it offers.
    with pytest.raises(DeviceError, match=r"TriggerSource='Line1' not available.*Software"):
        camera(cti, serial="SN_InterfaceA_0", trigger="hardware").open()


def test_device_selection() -> None:
    cti = tlsimu_cti()
    with camera(cti, serial="SN_InterfaceB_0") as cam:
        assert cam.name == "TLSimuMono SN_InterfaceB_0"
    with camera(cti, model="TLSimuColor", serial="SN_InterfaceA_1", user_name="Center") as cam:
        assert cam.name == "TLSimuColor SN_InterfaceA_1"
    with pytest.raises(
        DeviceError,
        match=r"no GenICam device with serial_number='NOPE'.*"
        r"devices found:.*SN_InterfaceA_0.*SN_InterfaceB_1",
    ):
        camera(cti, serial="NOPE").open()
    with pytest.raises(
        DeviceError,
        match=r"no GenICam device with serial_number='SN_InterfaceA_0'"
        r" model='TLSimuColor'",
    ):
        camera(cti, serial="SN_InterfaceA_0", model="TLSimuColor").open()
    # Two TLSimuColor devices: picking one silently could image the wrong station.
    with pytest.raises(DeviceError, match=r"2 GenICam devices match model='TLSimuColor'"):
        camera(cti, model="TLSimuColor").open()


def test_producer_from_environment(monkeypatch) -> None:
    monkeypatch.setenv(
        "GENICAM_GENTL64_PATH", os.pathsep.join(["/nonexistent", str(Path(tlsimu_cti()).parent)])
    )
    with camera(serial="SN_InterfaceA_0", width=32, height=32) as cam:
        cam.trigger()
        assert cam.grab(2.0).shape == (32, 32, 3)


def test_keeps_the_daemons_signal_handlers(mono: GenICamCamera) -> None:
    got: list[int] = []
    old_int = signal.signal(signal.SIGINT, lambda s, f: got.append(s))
    old_term = signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    try:
        mine = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        cam = camera(tlsimu_cti(), serial="SN_InterfaceB_0")
        cam.open()  # harvesters' ImageAcquirer installs its own SIGINT handler here
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == mine
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert got == [signal.SIGINT, signal.SIGTERM]
        cam.trigger()
        assert cam.grab(2.0).ndim == 3  # harvesters' handler would have destroyed it
        cam.close()
        assert signal.getsignal(signal.SIGINT) == mine[0]
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def test_lost_device_is_reopened_with_backoff() -> None:
    cti = tlsimu_cti()
    cam = camera(cti, serial="SN_InterfaceA_0", width=32, height=32, reopen_backoff_s=(0.3, 1.0))
    cam.open()
    try:
        cam.trigger()
        cam.grab(2.0)
        # The acquirer dies under the driver, as when the cable is pulled mid-run.
        cam._ia.destroy()
        with pytest.raises(DeviceError, match="device marked lost"):
            cam.trigger()
        assert cam.lost and not cam.is_open
        # The device is not there at the first reopen attempt: clear error, then backoff.
        cam.config.producer = str(Path(cti).parent / "absent.cti")
        with pytest.raises(DeviceError, match=r"device lost .* reopen failed: no GenTL producer"):
            cam.grab(0.5)
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match=r"next reopen attempt in 0\.\d s"):
            cam.grab(0.5)
        assert time.monotonic() - t0 < 0.1  # waiting out the backoff does not block the caller
        cam.config.producer = cti  # it is back
        time.sleep(0.35)
        cam.trigger()  # reopens, reconfigures (32x32) and triggers
        assert cam.is_open and cam.lost is None
        assert cam.grab(2.0).shape == (32, 32, 3)
    finally:
        cam.close()


def test_viky_free_run_rgba8_keeps_colours() -> None:
    cti = viky_cti()
    for serial, channel in (("0", 0), ("2", 2)):  # red ball, blue ball on white
        with camera(
            cti,
            serial=serial,
            pixel_format="RGBa8",
            width=128,
            height=100,
            trigger="free-run",
            timeout_s=2.0,
        ) as cam:
            assert not cam.has_trigger
            cam.trigger()  # a no-op in free-run
            img = cam.grab()
            # Frames queue while nobody grabs (Viky runs at 20 fps); a grab must not hand back
            # one that was exposed before it was called (under the previous lighting).
            time.sleep(0.3)
            t0 = time.monotonic()
            cam.grab()
            assert time.monotonic() - t0 > 0.025
        assert img.shape == (100, 128, 3) and img.dtype == np.uint8
        assert cam.last_pixel_format == "RGBa8"
        c = img.astype(int)
        others = [k for k in range(3) if k != channel]
        ball = (c[..., channel] - c[..., others[0]] > 100) & (
            c[..., channel] - c[..., others[1]] > 100
        )
        assert ball.sum() > 50, f"no {'RGB'[channel]} ball in Viky {serial}"
        assert (c[..., others[0]] - c[..., channel] > 100).sum() == 0


def test_viky_mono8_and_missing_trigger() -> None:
    cti = viky_cti()
    with camera(cti, serial="1", pixel_format="Mono8", trigger="free-run") as cam:
        img = cam.grab(2.0)
    assert img.shape == (400, 400, 3) and (img[..., 0] == img[..., 2]).all()
    with pytest.raises(
        DeviceError,
        match=r"trigger='software' needs the TriggerMode, "
        r"TriggerSource, TriggerSoftware.*free-run",
    ):
        camera(cti, serial="1").open()
    with pytest.raises(DeviceError, match=r"Width=64 failed.*Min = 100"):
        camera(cti, serial="1", width=64, trigger="free-run").open()


def test_two_cameras_on_one_producer_at_once(mono: GenICamCamera) -> None:
    # A second Harvester on the same .cti would see no devices; the driver shares one.
    with camera(tlsimu_cti(), serial="SN_InterfaceB_1", width=32, height=32) as colour:
        colour.trigger()
        mono.trigger()
        assert colour.grab(2.0).shape == (32, 32, 3)
        assert mono.grab(2.0).shape == (48, 64, 3)
    mono.trigger()  # closing the other camera leaves this one working
    assert mono.grab(2.0).shape == (48, 64, 3)


def test_grab_on_a_closed_camera_says_so() -> None:
    cam = camera(tlsimu_cti(), serial="SN_InterfaceA_0")
    with pytest.raises(DeviceError, match="not open"):
        cam.grab(0.2)
    with pytest.raises(DeviceError, match=r"grab timeout 0 must be > 0"):
        cam.grab(0)
