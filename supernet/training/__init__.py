"""Progressive-shrinking training of OFA supernets (``ofa-train``)."""
