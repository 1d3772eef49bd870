"""What the distillation kinds (``afrd``, ``cad``, ``dcam``) share: AFRD's multi-light reverse
distillation network (teacher per light, fusion, one-class bottleneck, reversed decoder), the
cache of the frozen teacher's maps and the training loop. A kind passes the loop the function
that builds its student; it never imports another kind.
"""
