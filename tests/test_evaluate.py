import numpy as np

from backend.evaluate import reference_metrics, write_table


def test_reference_metrics_crop_and_mask(tmp_path):
    rng = np.random.default_rng(0)
    gt = rng.random((3, 48, 64, 3)).astype(np.float32)
    pred = gt.copy()
    mask = np.zeros((48, 64), bool)
    mask[10:30, 10:50] = True
    pred[:, mask] = np.clip(pred[:, mask] + 0.1, 0, 1)  # error only inside the moving region
    m = reference_metrics(pred, gt, mask, lpips=False)
    assert m["m_psnr"] < 21.0 < m["psnr"]
    assert m["m_ssim"] < m["ssim"] <= 1.0
    pred2 = gt.copy()
    pred2[:, :4] = 0  # damage inside the 4-px border (32 px at 512 -> 4 px at 64) only: cropped away
    assert reference_metrics(pred2, gt, None, lpips=False)["psnr"] == float("inf")


def test_write_table_files(tmp_path):
    rows = [{"scene": "a", "variant": "ours", "path": "side", "m_psnr": 20.0, "motion_epe": 0.5},
            {"scene": "b", "variant": "ours", "path": "side", "m_psnr": 22.0, "motion_epe": 0.7}]
    md = write_table(rows, tmp_path)
    assert "| ours | side | 21.000 | 0.600 |" in md
    assert (tmp_path / "table.csv").read_text().count("\n") == 3
    assert (tmp_path / "plots.png").stat().st_size > 1000
