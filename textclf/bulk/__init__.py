"""Bulk prediction: tables read and written, classified locally or on Ray Data."""
