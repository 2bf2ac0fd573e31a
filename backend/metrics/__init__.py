"""Evaluation metrics: image (PSNR/SSIM, masked, border crop), LPIPS, PIQE and video/motion metrics.

LPIPS needs its weights once: ``python -m backend.metrics.lpips --fetch``.
"""
from backend.metrics.image import border_for, crop_border, psnr, ssim, ssim_map
from backend.metrics.motion import dis_flow, flicker, loop_metrics, motion_fidelity, stillness, video_flows, video_metrics
from backend.metrics.piqe import piqe

__all__ = ["border_for", "crop_border", "psnr", "ssim", "ssim_map", "piqe", "dis_flow", "video_flows",
           "motion_fidelity", "stillness", "flicker", "loop_metrics", "video_metrics"]
