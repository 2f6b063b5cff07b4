#!/usr/bin/env python3
import sys
sys.dont_write_bytecode = True
if __name__ == "__main__":
    print("")
