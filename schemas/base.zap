@version 1.0.0
# Base: PocketBase-style collections and records in each org's encrypted base.db.
# The org is always the caller's (from the identity carried with the call); API rules apply
# to that identity exactly as over HTTP. Records travel as PocketBase record JSON (UTF-8).

interface Base
  # One record by id, as JSON; NotFound if it does not exist or the view rule hides it.
  getRecord (collection Text, id Text) -> (record Data)
  # A page of records as JSON {page, perPage, totalItems, totalPages, items}.
  listRecords (collection Text, filter Text, sort Text, page Int32, perPage Int32) -> (page Data)
  # Create a record from a JSON object; returns the stored record as JSON.
  createRecord (collection Text, data Data) -> (record Data)
  # Update the given fields of a record from a JSON object; returns the record as JSON.
  updateRecord (collection Text, id Text, data Data) -> (record Data)
  # Delete a record (cascading where relations ask for it).
  deleteRecord (collection Text, id Text) -> ()
