-- Orders and their unsent events are lost going down.
DROP SCHEMA storefront CASCADE;
