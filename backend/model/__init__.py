"""What the stages optimise and move: Gaussians, cameras and camera paths, the 4D motion model, losses."""
