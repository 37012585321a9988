"""What the tests share: a simulator, daemons, receivers, the wheel, one ``until()``."""
