"""H.264 mp4 and PNG frame output."""
import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from backend.infra.errors import LoopscapeError
from backend.io.video import write_mp4, write_png_frames


def make_frames(n: int, w: int, h: int) -> list[np.ndarray]:
    """Smooth gradients with a bright square moving 3 px per frame (float32 in [0, 1])."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(n):
        f = np.stack([xx / w, yy / h, np.full_like(xx, 0.3)], -1)
        f[10:20, 5 + 3 * i:15 + 3 * i] = [1.0, 1.0, 0.9]
        frames.append(f)
    return frames


def read_back(path):
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = gen.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    return meta, frames


@pytest.mark.parametrize("w, h", [(64, 48), (65, 47)])
def test_mp4_frame_count_size_and_content(tmp_path, w, h):
    frames = make_frames(12, w, h)
    path = tmp_path / "out" / "video.mp4"
    n = write_mp4((f for f in frames), path, fps=24)  # a generator works: frames stream through
    assert n == 12 and path.is_file()
    assert not [p for p in path.parent.iterdir() if p.name != "video.mp4"]  # no temp file left
    meta, back = read_back(path)
    assert meta["codec"].startswith("h264") and abs(meta["fps"] - 24) < 1e-6
    assert len(back) == 12
    assert back[0].shape == (h + h % 2, w + w % 2, 3)  # padded to even sides
    for a, b in zip(frames, back):
        ref = (a * 255).astype(np.float32)
        err = np.abs(b[:h, :w].astype(np.float32) - ref)
        assert err.mean() < 3.0
    # the moving square is where it should be in the last frame
    sq = back[-1][10:20, 5 + 33:15 + 33].astype(np.float32).mean(axis=(0, 1))
    assert sq.min() > 200


def test_mp4_uint8_input_and_errors(tmp_path):
    frames = [(f * 255).astype(np.uint8) for f in make_frames(3, 32, 32)]
    assert write_mp4(frames, tmp_path / "a.mp4", fps=12.5) == 3
    meta, back = read_back(tmp_path / "a.mp4")
    assert len(back) == 3 and abs(meta["fps"] - 12.5) < 1e-6
    with pytest.raises(LoopscapeError, match="no frames"):
        write_mp4([], tmp_path / "b.mp4", fps=24)
    with pytest.raises(LoopscapeError, match="frame 1 is 20x16"):
        write_mp4([frames[0], np.zeros((16, 20, 3), np.uint8)], tmp_path / "c.mp4", fps=24)
    with pytest.raises(LoopscapeError, match="shape"):
        write_mp4([np.zeros((16, 20), np.uint8)], tmp_path / "d.mp4", fps=24)
    with pytest.raises(LoopscapeError, match="fps"):
        write_mp4(frames, tmp_path / "e.mp4", fps=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # failures leave nothing behind


def test_png_frames_round_trip(tmp_path):
    frames = make_frames(3, 33, 21)
    paths = write_png_frames(frames, tmp_path / "png")
    assert [p.name for p in paths] == ["0000.png", "0001.png", "0002.png"]
    assert write_png_frames(frames[:1], tmp_path / "png", prefix="f_")[0].name == "f_0000.png"
    for f, p in zip(frames, paths):
        back = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)[..., ::-1]
        assert back.dtype == np.uint8 and back.shape == (21, 33, 3)
        assert np.abs(back.astype(np.float32) - f * 255).max() <= 0.5 + 1e-3
