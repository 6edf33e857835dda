"""Tables and figures made from the results files (pure: data frames and arrays in, figures out)."""
