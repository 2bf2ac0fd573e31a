"""Rasterisation behind one function (gsplat on CUDA, the reference rasteriser on CPU) and the uncovered-pixel fill."""
