"""The search space as data: specs and block strings (`spec`), their layout (`layout`), the modules built from
it (`blocks`, `builder`), FLOPs and params (`flops`) and MnasNet's factorized space (`search_space`)."""
