"""SAM + a pseudo label -> a better pseudo label: the paper's merge rule (``merge``) and prompted refinement (``prompted``). Pure: arrays in, arrays out."""
