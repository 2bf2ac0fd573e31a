"""Evaluation metrics: image (PSNR/SSIM, masked, border crop), LPIPS, PIQE and video/motion metrics.

LPIPS needs its weights once: ``python -m backend.tools.metrics.lpips --fetch``.
"""
from backend.tools.metrics.image import border_for, crop_border, psnr, ssim, ssim_map
from backend.tools.metrics.motion import dis_flow, flicker, loop_metrics, motion_fidelity, stillness, video_flows, video_metrics
from backend.tools.metrics.piqe import piqe

__all__ = ["border_for", "crop_border", "psnr", "ssim", "ssim_map", "piqe", "dis_flow", "video_flows",
           "motion_fidelity", "stillness", "flicker", "loop_metrics", "video_metrics"]
