"""Reading inputs and writing artifacts: images, motion inputs, PLY, USD, video, atomic files."""
