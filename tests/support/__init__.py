"""What every test suite shares: the optimizer registry, the torch oracle, tree assertions."""
